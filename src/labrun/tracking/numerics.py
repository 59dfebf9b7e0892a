"""What decides a run's last bits beyond its packages: the kernels torch dispatches to, the
libraries it was built with, GPU software and precision settings, the numeric environment
variables, and the container the run is in.

Two runs of one config on two machines differ exactly when one of these (or the hardware, or a
package) differs, so each is recorded with the run and compared by the rerun's drift report.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path
from typing import Any

import torch

# Environment variables that change how kernels compute, thread or reduce; values are plain
# numbers and switches (no secrets live under these prefixes).
NUMERIC_ENV_PREFIXES = (
    "OMP_",
    "KMP_",
    "MKL_",
    "OPENBLAS_",
    "GOTO_",
    "BLIS_",
    "DNNL_",
    "ONEDNN_",
    "ATEN_",
    "CUBLAS_",
    "CUBLASLT_",
    "CUDNN_",
    "NVIDIA_TF32_",
    "NCCL_ALGO",
    "NCCL_PROTO",
    "TORCH_CUDNN_",
    "TORCH_ALLOW_TF32",
    "PYTORCH_",
)
NUMERIC_ENV_NAMES = ("CUDA_VISIBLE_DEVICES", "CUDA_LAUNCH_BLOCKING", "PYTHONHASHSEED")
# Set by the stack itself, not chosen by the user: Lightning (`deterministic=True` sets the
# cuBLAS workspace; its import sets the NVML check), and scikit-learn and joblib at import
# (`setdefault` of two OpenMP loader switches). Whether one is present depends on what the
# process imported before labrun, so recording it made a rerun "drift" for no reason.
SET_BY_THE_STACK = (
    "CUBLAS_WORKSPACE_CONFIG",
    "PYTORCH_NVML_BASED_CUDA_CHECK",
    "KMP_DUPLICATE_LIB_OK",
    "KMP_INIT_AT_FORK",
)
ARTIFACT = "provenance/numerics.json"
_BUILD_KEYS = ("BLAS_INFO", "LAPACK_INFO", "USE_MKL", "USE_MKLDNN", "USE_OPENMP", "USE_CUDA")


def numeric_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The numeric environment variables the process was started with, sorted by name."""
    from labrun.environ import AT_START

    env = AT_START if environ is None else environ
    return {
        k: env[k]
        for k in sorted(env)
        if (k.startswith(NUMERIC_ENV_PREFIXES) or k in NUMERIC_ENV_NAMES)
        and k not in SET_BY_THE_STACK
    }


def build_config() -> dict[str, str]:
    """torch's build: BLAS/LAPACK, MKL/oneDNN/OpenMP and their versions."""
    shown = torch.__config__.show()
    found = dict(re.findall(r"\b([A-Z_]+)=([^,\s]*)", shown))
    out = {k.lower(): found[k] for k in _BUILD_KEYS if k in found}
    for line in shown.splitlines():
        line = line.strip(" -")
        if line.startswith("Intel(R) oneAPI Math Kernel Library Version"):
            out["mkl_version"] = line.split("Version", 1)[1].split("-", 1)[0].strip()
        elif line.startswith("Intel(R) MKL-DNN"):
            out["onednn_version"] = line.split()[2]
        elif line.startswith("OpenMP"):
            out["openmp"] = line.split()[1]
    out["git_version"] = str(getattr(torch.version, "git_version", ""))[:12]
    return out


def gpu() -> dict[str, Any]:
    """CUDA/cuDNN/driver versions and GPU names; empty where there is no GPU."""
    if not torch.cuda.is_available():
        return {}
    found: dict[str, Any] = {
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "names": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
    }
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        found["driver"] = done.stdout.split("\n", 1)[0].strip() or None
    except (OSError, subprocess.SubprocessError):
        found["driver"] = None
    return found


def precision() -> dict[str, Any]:
    """The switches that trade exactness for speed: TF32, matmul precision, cuDNN's choice."""
    return {
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
    }


def container() -> dict[str, str]:
    """Which container the run is in, where that can be seen from inside: the image of an
    Apptainer/Singularity run, or the id of a Docker/Podman/Kubernetes one."""
    for name in ("APPTAINER_CONTAINER", "SINGULARITY_CONTAINER"):
        if os.environ.get(name):
            return {"runtime": "apptainer", "image": os.environ[name]}
    try:
        cgroup = Path("/proc/self/cgroup").read_text()
    except OSError:
        cgroup = ""
    match = re.search(r"(?:docker|containerd|crio|libpod)[-/:]([0-9a-f]{64})", cgroup)
    if match:
        return {"runtime": "docker", "id": match.group(1)[:12]}
    for marker, runtime in (("/.dockerenv", "docker"), ("/run/.containerenv", "podman")):
        if Path(marker).exists():
            return {"runtime": runtime, "id": socket.gethostname()}
    return {}


def capture() -> dict[str, Any]:
    """Everything above, as the run records it (`provenance.json` under `numerics`)."""
    return {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "build": build_config(),
        "gpu": gpu(),
        "precision": precision(),
        "env": numeric_env(),
        "container": container(),
    }
