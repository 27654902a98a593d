from setuptools import find_packages, setup

with open("README.md", encoding="utf-8") as f:
    long_description = f.read()

setup(
    name="merbench-plugins",
    version="0.1.0",
    description="Missing- and noise-robust multimodal emotion recognition models for MERBench",
    long_description=long_description,
    long_description_content_type="text/markdown",
    packages=find_packages(include=["merbench_plugins", "merbench_plugins.*"]),
    package_data={"merbench_plugins": ["*.yaml"]},
    python_requires=">=3.8",
    install_requires=["torch>=1.12", "numpy", "scikit-learn", "pyyaml", "tqdm"],
    extras_require={
        "test": ["pytest"],
        "plot": ["matplotlib"],
        "ravdess": ["opencv-python-headless<5"],  # 4.x ships the Haar face cascade used for face crops
        "bert": ["transformers"],
        "search": ["optuna>=3.0"],
    },
    entry_points={"console_scripts": ["merbench-plugins=merbench_plugins.__main__:main"]},
    py_modules=[],
    classifiers=["Programming Language :: Python :: 3", "Topic :: Scientific/Engineering :: Artificial Intelligence"],
)
