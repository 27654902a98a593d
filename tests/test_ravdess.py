"""RAVDESS pipeline: names, pairing, folds, metrics, audio front end, preprocessing, model, MERBench loader, runner."""
import argparse
import csv
import json
import math
import os
import wave

import numpy as np
import pytest
import torch

from merbench_plugins import create_model
from merbench_plugins.data.ravdess import (RAVDESS, RavdessClips, actor_folds, classification_metrics, discover,
                                           parse_name, write_cache_file)
from merbench_plugins.models.ravdess_av import GatedFusion
from merbench_plugins.modules.audio import (LogMelSpectrogram, SpecAugment, hz_to_mel, mel_center_frequencies,
                                            mel_to_hz, resample)
from merbench_plugins.modules.resnet import ResNet18, load_torchvision_resnet

FUSIONS = ["gated", "late", "concat", "xattn", "audio", "video"]


# ------------------------------------------------------------------------------------------- names

def test_parse_valid_name():
    n = parse_name("/data/Actor_12/01-01-05-02-01-02-12.mp4")
    assert (n.modality, n.channel, n.emotion, n.intensity, n.statement, n.repetition, n.actor) == (1, 1, 5, 2, 1, 2, 12)
    assert n.emotion_name == "angry" and n.gender == "female"
    assert n.key == "01-05-02-01-02-12" and n.stem == "01-01-05-02-01-02-12"
    assert parse_name("03-01-05-02-01-02-12.wav").key == n.key          # AV clip and its wav share the key
    assert parse_name("01-02-03-01-01-01-07.mp4").channel == 2          # song parses, speech_only refuses it
    with pytest.raises(ValueError, match="'channel'"):
        parse_name("01-02-03-01-01-01-07.mp4", speech_only=True)


@pytest.mark.parametrize("name, field", [
    ("04-01-05-01-01-01-01.mp4", "'modality'"),
    ("01-03-05-01-01-01-01.mp4", "'channel'"),
    ("01-01-09-01-01-01-01.mp4", "'emotion'"),
    ("01-01-00-01-01-01-01.mp4", "'emotion'"),
    ("01-01-05-03-01-01-01.mp4", "'intensity'"),
    ("01-01-01-02-01-01-01.mp4", "'intensity'"),                      # strong neutral does not exist
    ("01-01-05-01-03-01-01.mp4", "'statement'"),
    ("01-01-05-01-01-1-01.mp4", "'repetition'"),
    ("01-01-05-01-01-01-25.mp4", "'actor'"),
    ("01-01-05-01-01-01-00.wav", "'actor'"),
    ("01-01-05-01-01-01-ab.wav", "'actor'"),
    ("01-01-05-01-01-01.mp4", "7 two-digit fields"),
    ("clip.mp4", "7 two-digit fields"),
])
def test_parse_invalid_name_names_the_field(name, field):
    with pytest.raises(ValueError, match=field):
        parse_name(name)


def _touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "wb").close()


def test_discover_pairs_each_av_clip_with_its_wav_once(tmp_path):
    root = str(tmp_path)
    keys = ["01-03-01-01-01-01", "01-05-02-02-01-01", "01-04-01-01-02-02"]
    for key in keys:
        actor = key[-2:]
        _touch(f"{root}/Video_Speech_Actor_{actor}/Actor_{actor}/01-{key}.mp4")
        _touch(f"{root}/Video_Speech_Actor_{actor}/Actor_{actor}/02-{key}.mp4")     # video-only copy
        _touch(f"{root}/Audio_Speech_Actors_01-24/Actor_{actor}/03-{key}.wav")
    _touch(f"{root}/backup/Actor_01/03-{keys[0]}.wav")                                # duplicate wav
    _touch(f"{root}/Actor_03/01-01-06-01-01-01-03.mp4")                              # no wav
    _touch(f"{root}/Actor_03/03-01-07-01-01-01-03.wav")                              # no mp4
    _touch(f"{root}/Actor_03/01-01-99-01-01-01-03.mp4")                              # bad name
    _touch(f"{root}/Actor_03/01-02-03-01-01-01-03.mp4")                              # song
    _touch(f"{root}/Actor_03/notes.txt")
    _touch(f"{root}/__MACOSX/Actor_01/01-{keys[0]}.mp4")
    found = discover(root)
    assert sorted(c.name.key for c in found.clips) == sorted(keys)
    for clip in found.clips:
        assert os.path.basename(clip.video) == f"01-{clip.name.key}.mp4"
        assert os.path.basename(clip.audio) == f"03-{clip.name.key}.wav"
        assert "backup" not in clip.audio                     # the first (sorted) copy wins
    assert found.video_only == 3 and found.song == 1
    reasons = {os.path.basename(p): r for p, r in found.problems}
    assert "duplicate" in reasons[f"03-{keys[0]}.wav"]
    assert "no audio-only wav" in reasons["01-01-06-01-01-01-03.mp4"]
    assert "no audio-visual mp4" in reasons["03-01-07-01-01-01-03.wav"]
    assert "'emotion'" in reasons["01-01-99-01-01-01-03.mp4"]
    assert len(found.problems) == 4
    split = discover([f"{root}/Audio_Speech_Actors_01-24", f"{root}/Video_Speech_Actor_01",
                      f"{root}/Video_Speech_Actor_02"])
    assert sorted(c.name.key for c in split.clips) == sorted(keys) and not split.problems   # separate roots


# ------------------------------------------------------------------------------------------- folds, metrics

def test_actor_folds_are_disjoint_and_test_every_actor_once():
    folds = actor_folds(range(1, 25))
    assert len(folds) == 6
    tested = []
    for fold in folds:
        sets = set(fold.test), set(fold.val), set(fold.train)
        assert all(not (a & b) for i, a in enumerate(sets) for b in list(sets)[i + 1:])
        assert set().union(*sets) == set(range(1, 25))
        assert (len(fold.test), len(fold.val), len(fold.train)) == (4, 4, 16)
        assert sum(a % 2 for a in fold.test) == 2                       # 2 male + 2 female test actors
        tested += fold.test
    assert sorted(tested) == list(range(1, 25))
    assert folds[0].val == (5, 6, 7, 8) and folds[5].val == (1, 2, 3, 4)

    folds = actor_folds(range(1, 25), n_folds=8, n_val=2)              # configurable
    assert [len(f.test) for f in folds] == [3] * 8 and all(len(f.val) == 2 and len(f.train) == 19 for f in folds)
    with pytest.raises(ValueError, match="val_actors"):
        actor_folds(range(1, 25), n_folds=2)                           # 12 test + 12 val leaves no training


def test_metrics_match_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.RandomState(0)
    y, p = rng.randint(0, 4, 200), rng.randint(0, 4, 200)
    p[:60] = y[:60]
    m = classification_metrics(y, p, 4)
    assert m["macro_f1"] == pytest.approx(sk.f1_score(y, p, average="macro"))
    assert m["weighted_f1"] == pytest.approx(sk.f1_score(y, p, average="weighted"))
    assert m["acc"] == pytest.approx(sk.accuracy_score(y, p))
    assert m["uar"] == pytest.approx(sk.balanced_accuracy_score(y, p))


# ------------------------------------------------------------------------------------------- audio front end

@pytest.mark.parametrize("mel_scale", ["htk", "slaney"])
@pytest.mark.parametrize("freq", [1000.0, 450.0, 3200.0])
def test_logmel_of_a_sine_peaks_in_the_nearest_mel_bin(mel_scale, freq):
    t = torch.arange(47872) / 16000.0
    logmel = LogMelSpectrogram(16000, n_fft=1024, hop_length=256, n_mels=64, mel_scale=mel_scale)(
        torch.sin(2 * math.pi * freq * t))
    assert logmel.shape == (64, 188)
    centres = mel_center_frequencies(64, 0.0, 8000.0, mel_scale)
    assert int(logmel.mean(dim=1).argmax()) == int((centres - freq).abs().argmin())
    f = torch.tensor([0.0, 700.0, 1000.0, 5000.0])
    assert torch.allclose(mel_to_hz(hz_to_mel(f, mel_scale), mel_scale), f.double(), atol=1e-6)


def test_resample_keeps_the_tone_and_removes_what_cannot_be_represented():
    t = torch.arange(48000) / 48000.0
    out = resample(torch.sin(2 * math.pi * 1000 * t), 48000, 16000)
    assert out.shape == (16000,)
    spectrum = torch.fft.rfft(out[2000:14000] * torch.hann_window(12000)).abs()
    assert abs(int(spectrum.argmax()) * 16000 / 12000 - 1000) < 2
    assert out[2000:14000].abs().max() == pytest.approx(1.0, abs=0.01)
    alias = resample(torch.sin(2 * math.pi * 10000 * t), 48000, 16000)     # above the new Nyquist
    assert alias[2000:14000].abs().max() < 0.01
    odd = resample(torch.sin(2 * math.pi * 1000 * torch.arange(44100) / 44100.0), 44100, 16000)
    assert odd.shape == (16000,) and odd[2000:14000].abs().max() == pytest.approx(1.0, abs=0.01)


def _runs(row):
    """(start, length) of the True runs of a 1-D bool tensor."""
    padded = torch.cat([torch.zeros(1, dtype=torch.int8), row.to(torch.int8), torch.zeros(1, dtype=torch.int8)])
    diff = padded[1:] - padded[:-1]
    starts, ends = (diff == 1).nonzero().flatten(), (diff == -1).nonzero().flatten()
    return list(zip(starts.tolist(), (ends - starts).tolist()))


def test_specaugment_masks_within_bounds():
    torch.manual_seed(0)
    one = SpecAugment(freq_mask=20, time_mask=40, num_masks=1, p=1.0)
    freq, time = one.sample_masks(500, 64, 188)
    assert all(len(_runs(r)) <= 1 and all(w <= 20 for _, w in _runs(r)) for r in freq)
    assert all(len(_runs(r)) <= 1 and all(w <= 40 for _, w in _runs(r)) for r in time)
    assert freq.sum(1).max() == 20 and time.sum(1).max() == 40 and freq.sum(1).min() == 0   # the full 0..max range

    aug = SpecAugment(freq_mask=20, time_mask=40, num_masks=2, p=0.5).train()
    freq, time = aug.sample_masks(1000, 64, 188)
    assert freq.sum(1).max() <= 40 and time.sum(1).max() <= 80
    assert all(len(_runs(r)) <= 2 for r in freq[:200]) and all(len(_runs(r)) <= 2 for r in time[:200])
    applied = (freq.any(1) | time.any(1)).float().mean().item()
    assert 0.42 < applied < 0.55                               # p = 0.5, minus rows whose widths came out 0

    spec = torch.randn(64, 1, 64, 188) + 5.0                     # no natural zeros
    out = aug(spec)
    zeroed = out == 0
    # every zero is a whole band or a whole time span of one sample
    per_freq = zeroed.all(dim=3).squeeze(1)                      # [B, F]
    per_time = zeroed.all(dim=2).squeeze(1)                      # [B, T]
    assert torch.equal(zeroed.squeeze(1), per_freq[:, :, None] | per_time[:, None, :])
    assert torch.equal(out[~zeroed], spec[~zeroed])
    assert torch.equal(aug.eval()(spec), spec)                   # eval: identity


# ------------------------------------------------------------------------------------------- preprocessing

def _write_truncated_wav(path, declared=48000, holds=1000):
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(48000)
        w.writeframes(np.zeros(declared, dtype="<i2").tobytes())
    with open(path, "r+b") as f:                                 # cut the data, keep the header's count
        f.truncate(44 + 2 * holds)


def test_preprocessing_writes_caches_and_skips_corrupt_files(tmp_path, capsys):
    pytest.importorskip("cv2")
    from merbench_plugins.data.ravdess_prep import main, make_synthetic_ravdess
    root, out = str(tmp_path / "ravdess"), str(tmp_path / "cache")
    videos = make_synthetic_ravdess(root, actors=(1, 2), emotions=(1, 5), statements=(1,), intensities=(1, 2),
                                    frame_size=(64, 48), n_frames=12, seconds=0.5)
    assert len(videos) == 6                                     # neutral has no strong intensity
    bad_video = videos[0]
    with open(bad_video, "wb") as f:
        f.write(os.urandom(3000))
    bad_audio = os.path.join(root, "Audio_Speech_Actors_01-24", "Actor_02", "03-01-05-02-01-01-02.wav")
    _write_truncated_wav(bad_audio)

    assert main([root, out, "--workers", "1", "--crop", "center"]) == 0
    cached = sorted(f for f in os.listdir(out) if f.endswith(".npz"))
    assert len(cached) == 4
    assert not [f for f in os.listdir(out) if f.startswith(".")]          # no temp files left behind
    report = json.load(open(os.path.join(out, "ravdess_prep.json")))
    assert report["video_only_ignored"] == 6 and report["clips_cached"] == 4
    reasons = {r["clip"]: r["reason"] for r in report["failed"]}
    assert set(reasons) == {os.path.basename(bad_video)[:-4], "01-01-05-02-01-01-02"}
    truncated = reasons["01-01-05-02-01-01-02"]
    assert "truncated" in truncated and "03-01-05-02-01-01-02.wav" in truncated
    assert os.path.basename(bad_video) in reasons[os.path.basename(bad_video)[:-4]]

    with np.load(os.path.join(out, "01-01-05-01-01-01-01.npz")) as npz:   # angry: red ellipse, tone
        assert npz["frames"].shape == (8, 112, 112, 3) and npz["frames"].dtype == np.uint8
        assert npz["logmel"].shape == (64, 188) and npz["logmel"].dtype == np.float32
        assert "label" not in npz.files                        # no bare index that means one task only
        assert int(npz["emotion"]) == 5 and str(npz["emotion_name"]) == "angry" and int(npz["actor"]) == 1
        assert int(npz["class_index_8"]) == 4 and int(npz["class_index_4"]) == 3
        header = json.loads(str(npz["header"]))
        assert header["settings"]["size"] == 112 and header["crop"] == "center"
        r, g, b = npz["frames"][:, 50:62, 50:62].reshape(-1, 3).mean(0)
        assert r > 150 and g < 100 and b < 100                 # RGB order, centre crop keeps the face
        assert np.isfinite(npz["logmel"]).all() and npz["logmel"].std() > 1.0
    capsys.readouterr()
    assert main([root, out, "--workers", "1", "--crop", "center"]) == 0   # resumes: nothing redone
    assert "4 already cached, 2 to do" in capsys.readouterr().out
    assert main([root, out, "--workers", "1", "--crop", "center", "--size", "96"]) == 2   # other settings: refuse


def test_face_crop_follows_the_detected_face(tmp_path, monkeypatch):
    cv2 = pytest.importorskip("cv2")
    from merbench_plugins.data import ravdess_prep
    path = str(tmp_path / "clip.mp4")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 30, (160, 120))
    for _ in range(10):
        img = np.full((120, 160, 3), 128, np.uint8)
        img[20:50, 100:130] = (0, 0, 255)                        # BGR red "face", off centre
        writer.write(img)
    writer.release()

    class Detector:
        faces = np.array([[100, 20, 30, 30]])

        def detectMultiScale(self, grey, **kw):
            return self.faces

    monkeypatch.setattr(ravdess_prep, "_detector", lambda path: Detector())
    frames, info = ravdess_prep.read_video_frames(path, num_frames=4, size=32, crop="face", cascade="stub")
    assert info == {"n_video_frames": 10, "crop": "face"} and frames.shape == (4, 32, 32, 3)
    r, g, b = frames[:, 12:20, 12:20].reshape(-1, 3).mean(0)
    assert r > 200 and g < 60 and b < 60                         # the crop is centred on the face
    Detector.faces = np.zeros((0, 4), int)                       # no face: centre crop instead
    frames, info = ravdess_prep.read_video_frames(path, num_frames=4, size=32, crop="face", cascade="stub")
    assert info["crop"] == "no_face" and abs(frames[:, 12:20, 12:20].astype(float).mean() - 128) < 10


def test_preprocessing_exits_non_zero_when_nothing_is_usable(tmp_path):
    pytest.importorskip("cv2")
    from merbench_plugins.data.ravdess_prep import main
    root = tmp_path / "ravdess" / "Actor_01"
    root.mkdir(parents=True)
    (root / "01-01-03-01-01-01-01.mp4").write_bytes(b"not a video")
    (root / "03-01-03-01-01-01-01.wav").write_bytes(b"not a wav")
    assert main([str(tmp_path / "ravdess"), str(tmp_path / "cache"), "--workers", "1", "--crop", "center"]) == 1
    assert main([str(tmp_path / "empty"), str(tmp_path / "cache2")]) == 2


# ------------------------------------------------------------------------------------------- model

def _batch(b=3, frames=2, side=32, mel_t=48):
    torch.manual_seed(1)
    return {"audios": torch.randn(b, 1, 64, mel_t), "videos": torch.rand(b, frames, 3, side, side),
            "texts": torch.zeros(b, 0)}


def _model(fusion, **kw):
    torch.manual_seed(0)
    opts = dict(output_dim1=4, output_dim2=0, resnet_width=8, hidden_dim=16, use_modality_dropout=False)
    opts.update(kw)
    return create_model("ravdess_av", opts, fusion=fusion)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_every_fusion_forward_backward_reaches_every_parameter(fusion):
    model = _model(fusion).train()
    features, emos, vals, interloss = model(_batch())
    assert features.shape == (3, 16) and emos.shape == (3, 4) and vals.shape == (3, 0) and interloss.dim() == 0
    (torch.nn.functional.cross_entropy(emos, torch.tensor([0, 1, 2])) + interloss).backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not silent, f"no gradient for {silent}"
    assert model.grad_clip == -1.0


@pytest.mark.parametrize("fusion", ["gated", "late", "concat", "xattn"])
def test_missing_modality_is_ignored_and_never_nan(fusion):
    model = _model(fusion).eval()
    batch = _batch()
    batch["audios"][0] = 0                                        # sample 0: no audio
    batch["videos"][1] = 0                                        # sample 1: no video
    with torch.no_grad():
        _, before, _, _ = model(batch)
        for p in model.audio_encoder.parameters():                 # change the audio branch only
            p.add_(torch.randn_like(p))
        _, after, _, _ = model(batch)
    assert torch.isfinite(before).all() and torch.isfinite(after).all()
    assert torch.allclose(before[0], after[0], atol=1e-5)          # sample 0 never saw the audio branch
    assert not torch.allclose(before[1], after[1], atol=1e-3)      # sample 1 is audio only
    empty = {k: torch.zeros_like(v) for k, v in batch.items()}
    with torch.no_grad():
        assert torch.isfinite(model(empty)[1]).all()


def test_gate_starts_at_sigmoid_of_its_bias():
    for simple in (True, False):
        gate = GatedFusion(8, simple=simple, bias=-1.0).eval()
        torch.nn.init.zeros_(gate.gate.weight if simple else gate.gate[-1].weight)
        fused, w = gate(torch.ones(2, 8), torch.zeros(2, 8), torch.ones(2, 2, dtype=torch.bool))
        assert torch.allclose(w, torch.full((2, 1), 1 / (1 + math.e)))            # 0.27 audio, 0.73 video
    only_video = torch.tensor([[False, True]])
    assert gate(torch.ones(1, 8), torch.zeros(1, 8), only_video)[1].item() == 0.0


def test_modality_dropout_drops_one_modality_never_both():
    model = _model("gated", use_modality_dropout=True, modality_dropout=0.5).train()
    present = torch.ones(4000, 2, dtype=torch.bool)
    kept = model.modality_dropout(present)
    assert kept.any(dim=1).all()
    assert 0.25 < (~kept).float().mean().item() < 0.45             # ~p per modality, minus the rescued ones
    assert _model("audio", use_modality_dropout=True).modality_dropout.rate == 0.0   # unimodal: nothing to drop


def test_resnet18_matches_torchvision_and_loads_its_weights(tmp_path):
    net = ResNet18(3, 64)
    assert sum(p.numel() for p in net.parameters()) == 11689512 - 513000      # torchvision resnet18 minus fc
    state = {k: torch.randn_like(v.float()).to(v.dtype) for k, v in net.state_dict().items()}
    state.update({"fc.weight": torch.randn(1000, 512), "fc.bias": torch.randn(1000)})
    path = str(tmp_path / "resnet18.pth")
    torch.save(state, path)

    audio = ResNet18(1, 64)
    assert load_torchvision_resnet(audio, path) == ["fc.bias", "fc.weight"]
    assert torch.allclose(audio.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))
    assert torch.equal(audio.layer4[1].bn2.running_var, state["layer4.1.bn2.running_var"])

    broken = dict(state)
    del broken["layer2.0.downsample.0.weight"]
    broken["layer9.0.conv1.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as err:
        load_torchvision_resnet(ResNet18(3, 64), broken)
    assert "layer2.0.downsample.0.weight" in str(err.value) and "layer9.0.conv1.weight" in str(err.value)
    with pytest.raises(ValueError, match=r"shape mismatch: .*conv1.weight"):
        load_torchvision_resnet(ResNet18(3, 8), path)
    model = _model("video", video_weights=path, resnet_width=64)
    assert torch.equal(model.video_encoder.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])


def test_pretrained_stem_folded_to_one_channel_answers_a_grey_image_like_the_rgb_stem(tmp_path):
    torch.manual_seed(0)
    rgb = ResNet18(3, 16)
    state = {k: torch.randn_like(v.float()).to(v.dtype) if v.is_floating_point() else v
             for k, v in rgb.state_dict().items()}
    state = {k: (v.abs() + 0.5 if "running_var" in k else v) for k, v in state.items()}   # valid BN statistics
    rgb.load_state_dict(state)
    grey = ResNet18(1, 16)
    load_torchvision_resnet(grey, state)
    image = torch.rand(2, 1, 64, 64)
    rgb.eval(), grey.eval()
    with torch.no_grad():
        expected, got = rgb(image.repeat(1, 3, 1, 1)), grey(image)
        stem_rgb = rgb.bn1(rgb.conv1(image.repeat(1, 3, 1, 1)))
        stem_grey = grey.bn1(grey.conv1(image))
    assert torch.allclose(stem_grey, stem_rgb, atol=1e-4)            # what the pretrained BN statistics expect
    assert torch.allclose(got, expected, atol=1e-4 * expected.abs().max().item())
    assert not torch.allclose(stem_grey, rgb.bn1(rgb.conv1(image.repeat(1, 3, 1, 1) / 3)), atol=1e-2)  # mean: 1/3


def test_pretrained_weights_make_lr_1e4_the_default_and_an_explicit_lr_wins():
    from merbench_plugins.config import RavdessAVConfig
    assert RavdessAVConfig.from_args({}).lr == 1e-3
    assert RavdessAVConfig.from_args({"video_weights": "r18.pth"}).lr == 1e-4
    assert RavdessAVConfig.from_args({"audio_weights": "r18.pth", "lr": None}).lr == 1e-4
    assert RavdessAVConfig.from_args({"audio_weights": "r18.pth", "lr": 1e-3}).lr == 1e-3


# ------------------------------------------------------------------------------------------- cache, loaders, runner

CACHE_SETTINGS = {"frames": 8, "size": 32, "crop": "center"}


def _write_cache(folder, actors=range(1, 7), emotions=(1, 3, 4, 5, 6), side=32, mel_t=48):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.RandomState(0)
    for actor in actors:
        for emotion in emotions:
            for statement in (1, 2):
                stem = f"01-01-{emotion:02d}-01-{statement:02d}-01-{actor:02d}"
                frames = rng.randint(0, 255, (8, side, side, 3)).astype(np.uint8)
                frames[..., emotion % 3] = 200                                     # a weak class cue
                logmel = rng.randn(64, mel_t).astype(np.float32) + emotion
                write_cache_file(os.path.join(folder, stem + ".npz"), frames, logmel, parse_name(stem),
                                 CACHE_SETTINGS)
    return folder


def test_merbench_dataloader_contract(tmp_path, monkeypatch):
    cache = _write_cache(str(tmp_path / "cache"))
    args = argparse.Namespace(ravdess_cache=cache, ravdess_folds=3, ravdess_val_actors=0, batch_size=4, num_workers=0,
                              num_frames=4)                  # val_actors 0 (the config default): a fold's worth
    data = RAVDESS(args)
    assert (args.output_dim1, args.output_dim2, args.metric_name) == (4, 0, "emo")
    assert RAVDESS.dataset_class is RavdessClips
    train, evals, tests = data.get_loaders()
    assert len(train) == len(evals) == len(data.fold_test_loaders) == 3 and tests == []
    assert [len(f.val) for f in data.folds] == [2, 2, 2]
    assert train[0].dataset.get_featdim() == (64, 0, 3)
    batch, emos, vals, names = next(iter(data.fold_test_loaders[0]))
    assert batch["audios"].shape == (4, 1, 64, 48) and batch["videos"].shape == (4, 4, 3, 32, 32)
    assert batch["texts"].shape == (4, 0) and 0 <= batch["videos"].min() and batch["videos"].max() <= 1
    assert emos.max() < 4 and vals.abs().sum() == 0
    for k, fold in enumerate(data.folds):
        test_actors = {parse_name(n).actor for _, _, _, ns in data.fold_test_loaders[k] for n in ns}
        train_actors = {parse_name(n).actor for _, _, _, ns in train[k] for n in ns}
        assert test_actors == set(fold.test) and train_actors == set(fold.train)
        assert sum(len(ns) for _, _, _, ns in evals[k]) == 8 * len(fold.val)     # 4 emotions x 2 statements
    results, text = data.calculate_results(np.eye(4)[[0, 1, 2, 2]], np.array([0, 1, 2, 3]), [], [])
    assert results["emoacc"] == 0.75 and results["emouar"] == 0.75
    assert results["emofscore"] == pytest.approx((1 + 1 + 2 / 3 + 0) / 4)      # macro-F1
    assert text == "f1:0.6667_acc:0.7500_uar:0.7500"

    assert RAVDESS(argparse.Namespace(ravdess_classes=8, ravdess_cache=cache)).num_classes == 8
    monkeypatch.setenv("RAVDESS_CACHE", cache)
    assert RAVDESS(argparse.Namespace()).cache_dir == cache
    monkeypatch.delenv("RAVDESS_CACHE")
    with pytest.raises(ValueError, match="--ravdess_cache"):
        RAVDESS(argparse.Namespace())


def test_standalone_runner_end_to_end(tmp_path, capsys):
    from merbench_plugins.train.ravdess_runner import main
    cache, out = _write_cache(str(tmp_path / "cache")), str(tmp_path / "out")
    rc = main([cache, "--out", out, "--folds", "3", "--max_folds", "2", "--epochs", "2", "--resnet_width", "8",
               "--hidden_dim", "16", "--batch_size", "8", "--num_workers", "0", "--quiet", "--num_frames", "2"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "mean +- std" in printed and "macro-F1" in printed
    summary = json.load(open(os.path.join(out, "results.json")))
    assert len(summary["folds"]) == 2 and summary["train"]["seed"] == 42
    for fold in summary["folds"]:
        assert not set(fold["test_actors"]) & (set(fold["val_actors"]) | set(fold["train_actors"]))
        assert all(0.0 <= fold[m] <= 1.0 for m in ("macro_f1", "weighted_f1", "acc", "uar"))
        assert fold["n_test"] == 16 and 1 <= fold["best_epoch"] <= 2
    assert np.array(summary["confusion"]).sum() == 32
    assert summary["mean"]["acc"] == pytest.approx(np.mean([f["acc"] for f in summary["folds"]]))
    rows = list(csv.reader(open(os.path.join(out, "results.csv"))))
    assert [r[0] for r in rows[1:]] == ["1", "2", "mean", "std"]
    for name in ("history.csv", "predictions.csv", "confusion.csv"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    assert main([str(tmp_path / "nowhere"), "--out", out]) == 2


# ------------------------------------------------------------------------------------------- crash safety (issue 17)

def _damage(cache):
    """Truncate, empty, bit-flip and re-settle four cache files; returns {stem: reason fragment}."""
    stems = sorted(f[:-4] for f in os.listdir(cache) if f.endswith(".npz"))
    path = lambda stem: os.path.join(cache, stem + ".npz")  # noqa: E731
    with open(path(stems[0]), "r+b") as f:
        f.truncate(os.path.getsize(path(stems[0])) // 2)
    open(path(stems[1]), "wb").close()
    with np.load(path(stems[2])) as npz:
        arrays = dict(npz)
    arrays["frames"] = arrays["frames"].copy()
    arrays["frames"][0, 0, 0, 0] ^= 1                                     # one bit
    np.savez(path(stems[2]), **arrays)
    with np.load(path(stems[3])) as npz:
        write_cache_file(path(stems[3]), npz["frames"], npz["logmel"], parse_name(stems[3]),
                         dict(CACHE_SETTINGS, size=64))
    return {stems[0]: "truncated", stems[1]: "empty", stems[2]: "checksum", stems[3]: "size 64 -> 32"}


def test_truncated_empty_damaged_and_other_settings_cache_files_are_named_and_skipped(tmp_path, capsys):
    from merbench_plugins.data.ravdess import CacheError, read_cache_file
    from merbench_plugins.train.ravdess_runner import main
    cache = _write_cache(str(tmp_path / "cache"), actors=range(1, 4), emotions=(1, 3, 4, 5))
    first = sorted(os.listdir(cache))[0]
    good = read_cache_file(os.path.join(cache, first), CACHE_SETTINGS)
    assert good["header"]["checksum"].startswith("crc32:")
    bad = _damage(cache)
    for stem, reason in bad.items():
        p = os.path.join(cache, stem + ".npz")
        with pytest.raises(CacheError) as err:
            read_cache_file(p, CACHE_SETTINGS)
        assert err.value.path == p and reason in str(err.value) and "ravdess-prep" in str(err.value)
        assert "\n" not in str(err.value)
    with pytest.raises(CacheError, match="truncated"):                    # the per-file reader: one line, no zip error
        RavdessClips(argparse.Namespace(ravdess_cache=cache), [list(bad)[0]], [0])[0]

    capsys.readouterr()
    out = str(tmp_path / "out")
    rc = main([cache, "--out", out, "--folds", "3", "--max_folds", "1", "--epochs", "1", "--resnet_width", "8",
               "--hidden_dim", "16", "--batch_size", "8", "--quiet", "--num_frames", "2"])
    err = capsys.readouterr().err
    assert rc == 0 and "Traceback" not in err
    skipped = [line for line in err.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 4 and all(any(stem in line for line in skipped) for stem in bad)
    summary = json.load(open(os.path.join(out, "results.json")))
    assert summary["cache"]["clips"] == 3 * 4 * 2 - 4
    assert sorted(os.path.basename(s["file"])[:-4] for s in summary["cache"]["skipped_files"]) == sorted(bad)


def test_in_memory_dataset_batches_equal_the_per_file_readers(tmp_path):
    from merbench_plugins.data.ravdess import IndexSampler, RavdessMemory
    from torch.utils.data import DataLoader
    cache = _write_cache(str(tmp_path / "cache"), actors=(1, 2), emotions=(1, 3, 4, 5))
    stems = sorted(f[:-4] for f in os.listdir(cache) if f.endswith(".npz"))
    labels = [i % 4 for i in range(len(stems))]
    args = argparse.Namespace(ravdess_cache=cache, num_frames=4)
    memory, per_file = RavdessMemory(args, stems, labels), RavdessClips(args, stems, labels)
    assert memory.frames.dtype == torch.uint8 and memory.logmels.dtype == torch.float16
    order = [5, 0, 3, 7, 1, 2, 6, 4, 9, 8]
    loaders = [DataLoader(d, batch_size=3, sampler=IndexSampler(order), collate_fn=d.collater) for d in (memory, per_file)]
    n = 0
    for (b1, e1, v1, n1), (b2, e2, v2, n2) in zip(*loaders):
        assert n1 == n2 and torch.equal(e1, e2) and torch.equal(v1, v2)
        assert torch.equal(b1["videos"], b2["videos"]) and b1["videos"].shape[1] == 4
        assert torch.equal(b1["audios"], b2["audios"].half().float())   # float16 in memory
        assert (b1["audios"] - b2["audios"]).abs().max() < 5e-3
        n += len(n1)
    assert n == len(order) and memory.get_featdim() == per_file.get_featdim() == (64, 0, 3)


def test_training_killed_in_a_fold_resumes_at_that_fold(tmp_path, monkeypatch, capsys):
    from merbench_plugins.train import ravdess_runner
    cache = _write_cache(str(tmp_path / "cache"), actors=range(1, 7), emotions=(1, 3, 4, 5))
    flags = ["--folds", "3", "--epochs", "2", "--resnet_width", "8", "--hidden_dim", "16", "--batch_size", "8",
             "--quiet", "--num_frames", "2"]
    whole, part = str(tmp_path / "whole"), str(tmp_path / "part")
    assert ravdess_runner.main([cache, "--out", whole] + flags) == 0

    real, calls = ravdess_runner.train_fold, []

    def dies_in_fold_2(*a, **kw):
        calls.append(kw["desc"])
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")                          # a crash in fold 2
        return real(*a, **kw)

    monkeypatch.setattr(ravdess_runner, "train_fold", dies_in_fold_2)
    with pytest.raises(KeyboardInterrupt):
        ravdess_runner.main([cache, "--out", part] + flags)
    assert os.listdir(os.path.join(part, "folds")) == ["fold_1.json"]
    kept = json.load(open(os.path.join(part, "results.json")))          # written as fold 1 ended
    assert kept["train"]["folds_done"] == 1 and len(kept["folds"]) == 1
    assert not [f for f in os.listdir(part) if f.startswith(".tmp")]

    calls.clear()
    monkeypatch.setattr(ravdess_runner, "train_fold", lambda *a, **kw: calls.append(kw["desc"]) or real(*a, **kw))
    capsys.readouterr()
    assert ravdess_runner.main([cache, "--out", part] + flags) == 0
    assert calls == ["fold 2/3", "fold 3/3"] and "resuming: folds 1-1 are done" in capsys.readouterr().out
    a, b = (json.load(open(os.path.join(d, "results.json"))) for d in (whole, part))
    metrics = ("macro_f1", "acc", "uar", "best_epoch", "val_macro_f1")
    assert [[f[m] for m in metrics] for f in a["folds"]] == [[f[m] for m in metrics] for f in b["folds"]]
    assert a["confusion"] == b["confusion"]

    calls.clear()
    assert ravdess_runner.main([cache, "--out", part] + flags) == 0 and calls == []      # all done: nothing retrained
    assert ravdess_runner.main([cache, "--out", part, "--epochs", "3"] + flags[:2] + flags[4:]) == 2
    assert "other settings (flags.epochs 2 -> 3)" in capsys.readouterr().err
    assert ravdess_runner.main([cache, "--out", part, "--restart", "--max_folds", "1"] + flags) == 0
    assert calls == ["fold 1/1"] and os.listdir(os.path.join(part, "folds")) == ["fold_1.json"]


def test_seed_flag_names_parse_to_the_same_config():
    from merbench_plugins.config import RavdessAVConfig
    from merbench_plugins.train.ravdess_runner import build_parser
    ours = ["c", "--out", "o", "--classes", "8", "--patience", "5", "--scheduler", "cosine", "--modality_dropout",
            "0.3", "--audio_encoder", "resnet18"]
    seed = ["c", "--out", "o", "--num_classes", "8", "--early_stopping_patience", "5", "--use_cosine_annealing",
            "--modality_dropout_p", "0.3", "--use_resnet_audio"]
    a, b = build_parser().parse_args(ours), build_parser().parse_args(seed)
    assert vars(a) == vars(b)
    assert RavdessAVConfig.from_args(a) == RavdessAVConfig.from_args(b)
    assert (b.classes, b.patience, b.scheduler, b.modality_dropout, b.audio_encoder) == (8, 5, "cosine", 0.3, "resnet18")
    no_sched = build_parser().parse_args(["c", "--out", "o", "--scheduler", "none"])
    assert no_sched.scheduler == "none" and build_parser().parse_args(["c", "--out", "o"]).audio_encoder is None
    from merbench_plugins.train.options import add_model_flags            # main-robust.py takes them too
    parsed = add_model_flags(argparse.ArgumentParser()).parse_args(["--modality_dropout_p", "0.3", "--use_resnet_audio",
                                                                    "--num_classes", "8"])
    assert (parsed.modality_dropout, parsed.audio_encoder, parsed.ravdess_classes) == (0.3, "resnet18", 8)


def test_balanced_class_weights_and_the_weighted_loss():
    from merbench_plugins.train.ravdess_runner import balanced_weights
    labels = np.array([0] * 16 + [1] * 32 + [2] * 32 + [3] * 32)        # 4-class RAVDESS: neutral has half
    w = balanced_weights(labels, 4)
    assert np.allclose(w, [112 / 64, 112 / 128, 112 / 128, 112 / 128]) and w[0] == 2 * w[1]
    assert np.isclose((w[labels]).sum(), len(labels))                   # the mean sample weight stays 1
    assert balanced_weights(np.array([1, 1, 2]), 3)[0] == 0.0           # absent class: no weight, no inf
    model = _model("gated")
    logits, target = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    assert torch.allclose(model.classification_loss()(logits, target), torch.nn.functional.cross_entropy(logits, target))
    model.set_class_weights(w)
    assert torch.allclose(model.classification_loss()(logits, target),
                          torch.nn.functional.cross_entropy(logits, target, weight=torch.tensor(w, dtype=torch.float32)))


def _tone_gain_db(freq, rate=48000, new_rate=16000, dtype=torch.float64):
    t = torch.arange(3 * rate, dtype=torch.float64) / rate
    out = resample(torch.sin(2 * math.pi * freq * t).to(dtype), rate, new_rate).double()[4000:-4000]
    return 20 * math.log10(out.pow(2).mean().sqrt().item() * math.sqrt(2))


def test_resampler_stop_band_and_pass_band():
    gains = {f: _tone_gain_db(f) for f in (1000, 4000, 7000, 7200, 8100, 9000, 12000, 20000)}
    print("48 -> 16 kHz gain (dB):", {f: round(g, 1) for f, g in gains.items()})
    assert gains[9000] < -120 and gains[8100] < -120                 # aliases onto 7.0 / 7.9 kHz (issue: -17.5, -7.3)
    assert gains[12000] < -120 and gains[20000] < -120
    assert all(abs(gains[f]) < 0.01 for f in (1000, 4000, 7000, 7200))   # flat pass band
    assert _tone_gain_db(9000, dtype=torch.float32) < -120               # float32 (the prep's dtype) too
    assert _tone_gain_db(9000, rate=44100) < -120 and abs(_tone_gain_db(1000, rate=44100)) < 0.01


def test_prep_killed_then_rerun_with_other_settings_never_mixes_them(tmp_path, monkeypatch, capsys):
    pytest.importorskip("cv2")
    from merbench_plugins.data import ravdess_prep
    from merbench_plugins.data.ravdess import check_cache_file
    root, out = str(tmp_path / "ravdess"), str(tmp_path / "cache")
    ravdess_prep.make_synthetic_ravdess(root, actors=(1, 2), emotions=(1, 5), statements=(1, 2), frame_size=(64, 48),
                                        n_frames=12, seconds=0.5, video_only=False)
    real, done = ravdess_prep._run_job, []

    def killed_after_3(job):
        if len(done) == 3:
            raise SystemExit("kill -9")                                 # the process dies mid-run
        done.append(job[0].stem)
        return real(job)

    monkeypatch.setattr(ravdess_prep, "_run_job", killed_after_3)
    base = [root, out, "--workers", "1", "--crop", "center"]
    with pytest.raises(SystemExit):
        ravdess_prep.main(base + ["--size", "64"])
    manifest = json.load(open(os.path.join(out, "ravdess_prep.json")))
    assert manifest["status"] == "running" and manifest["params"]["size"] == 64   # written before the first clip
    assert len([f for f in os.listdir(out) if f.endswith(".npz")]) == 3
    monkeypatch.setattr(ravdess_prep, "_run_job", real)
    open(os.path.join(out, ".tmp-abc.npz"), "wb").close()                 # what kill -9 leaves mid-write

    capsys.readouterr()
    assert ravdess_prep.main(base) == 2                                   # defaults (112): refused, nothing mixed
    assert "size 64 -> 112" in capsys.readouterr().err
    assert ravdess_prep.main(base + ["--size", "64"]) == 0                # the same settings: resumes
    assert "3 already cached, 5 to do" in capsys.readouterr().out
    assert ravdess_prep.main(base + ["--overwrite"]) == 0                 # other settings, explicitly: every clip
    files = sorted(f for f in os.listdir(out) if f.endswith(".npz"))
    settings = json.load(open(os.path.join(out, "ravdess_prep.json")))["params"]
    assert len(files) == 8 and settings["size"] == 112 and not [f for f in os.listdir(out) if f.startswith(".tmp")]
    assert all(check_cache_file(os.path.join(out, f), settings) is None for f in files)

    # a manifest lost with the crash: each file's own header still tells the 64 ones apart
    os.unlink(os.path.join(out, "ravdess_prep.json"))
    ravdess_prep.main(base + ["--size", "64", "--limit", "2"])            # 2 files at 64, manifest says 64
    os.unlink(os.path.join(out, "ravdess_prep.json"))
    capsys.readouterr()
    assert ravdess_prep.main(base) == 0
    printed = capsys.readouterr().out
    assert printed.count("made with other settings (size 64 -> 112)") == 2 and "6 already cached, 2 to do" in printed
    assert all(check_cache_file(os.path.join(out, f), settings) is None for f in files)


def test_prep_rebuilds_truncated_and_empty_cache_files_and_counts_clips_without_a_face(tmp_path, monkeypatch, capsys):
    pytest.importorskip("cv2")
    from merbench_plugins.data import ravdess_prep
    from merbench_plugins.data.ravdess import check_cache_file
    root, out = str(tmp_path / "ravdess"), str(tmp_path / "cache")
    ravdess_prep.make_synthetic_ravdess(root, actors=(1,), emotions=(1, 5), statements=(1, 2), frame_size=(64, 48),
                                        n_frames=12, seconds=0.5, video_only=False)

    class NoFace:
        def detectMultiScale(self, grey, **kw):
            return np.zeros((0, 4), int)

    cascade = tmp_path / "cascade.xml"
    cascade.write_text("stub")
    monkeypatch.setattr(ravdess_prep, "_detector", lambda path: NoFace())
    base = [root, out, "--workers", "1", "--crop", "face", "--cascade", str(cascade)]
    assert ravdess_prep.main(base) == 0
    assert "4 of 4 clips had no detected face" in capsys.readouterr().out
    manifest = json.load(open(os.path.join(out, "ravdess_prep.json")))
    assert manifest["crops"] == {"no_face": 4} and len(manifest["no_face"]) == 4 and manifest["status"] == "complete"

    files = sorted(os.path.join(out, f) for f in os.listdir(out) if f.endswith(".npz"))
    with open(files[0], "r+b") as f:
        f.truncate(1000)
    open(files[1], "wb").close()
    assert ravdess_prep.main(base) == 0
    printed = capsys.readouterr().out
    assert f"rebuilding {files[0]}: unreadable, truncated" in printed and f"rebuilding {files[1]}: empty file" in printed
    assert "2 already cached, 2 to do (2 bad file(s) to rebuild)" in printed
    assert all(check_cache_file(f, manifest["params"]) is None for f in files)
    assert len(json.load(open(os.path.join(out, "ravdess_prep.json")))["rebuilt"]) == 2
