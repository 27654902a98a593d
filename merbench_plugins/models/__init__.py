"""Importing this package registers every model (one module per model, one import line each)."""
from . import attention  # noqa: F401
from . import attention_robust_v2  # noqa: F401
from . import attention_robust_v4  # noqa: F401
from . import mrg_net  # noqa: F401
from . import ravdess_av  # noqa: F401
