"""Builds ssd_fast._C: the C++ CPU kernels always, the CUDA kernels whenever torch is a
CUDA build and nvcc is found (a GPU is not needed to compile them).

Environment:
  SSD_FAST_FORCE_CPU=1    build the CPU kernels only
  SSD_FAST_FORCE_CUDA=1   fail unless the CUDA kernels can be built
  TORCH_CUDA_ARCH_LIST    GPU architectures (default below when unset)
  CUDA_HOME               the CUDA toolkit; /usr/local/cuda when unset and present
  MAX_JOBS                parallel compile jobs (default: the number of CPUs)

Build with `pip install --no-build-isolation -e .` so that the torch already installed is
the one compiled against.
"""

import glob
import os
import shutil

from setuptools import find_packages, setup

DEFAULT_ARCH_LIST = "9.0"  # H100 / H200, the cards this project is measured on


def _prefer_local_cuda() -> None:
    # torch guesses CUDA_HOME from the nvcc on PATH; /usr/local/bin/nvcc would give
    # /usr/local, where the link fails. Point it at the real toolkit before torch looks.
    if "CUDA_HOME" not in os.environ and os.path.exists("/usr/local/cuda/bin/nvcc"):
        os.environ["CUDA_HOME"] = "/usr/local/cuda"


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _want_cuda(cuda_home) -> tuple[bool, str]:
    import torch

    if _flag("SSD_FAST_FORCE_CPU"):
        return False, "SSD_FAST_FORCE_CPU=1"
    if torch.version.cuda is None:
        reason = "torch is a CPU-only build"
    elif cuda_home is None or shutil.which("nvcc", path=os.path.join(cuda_home, "bin")) is None:
        reason = "nvcc not found (set CUDA_HOME)"
    else:
        return True, f"torch {torch.__version__} (CUDA {torch.version.cuda}), nvcc in {cuda_home}"
    if _flag("SSD_FAST_FORCE_CUDA"):
        raise RuntimeError(f"SSD_FAST_FORCE_CUDA=1 but the CUDA kernels cannot be built: {reason}")
    return False, reason


def _extension():
    _prefer_local_cuda()
    from torch.utils import cpp_extension

    sources = ["csrc/ssd_fast.cpp"] + sorted(glob.glob("csrc/cpu/*.cpp"))
    # -fno-trapping-math lets GCC vectorize the branch-free selects; IEEE results are unchanged.
    # -fopenmp: at::parallel_for is an inline OpenMP loop, single-threaded without it.
    cxx = ["-O3", "-ffp-contract=off", "-fno-trapping-math", "-fopenmp", "-DSSD_FAST_PYTHON_MODULE"]
    use_cuda, why = _want_cuda(cpp_extension.CUDA_HOME)
    if not use_cuda:
        print(f"ssd_fast: building CPU kernels only ({why})")
        return cpp_extension.CppExtension(
            "ssd_fast._C", sources, extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"]
        )
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCH_LIST)
    print(f"ssd_fast: building CPU and CUDA kernels for arch {os.environ['TORCH_CUDA_ARCH_LIST']} ({why})")
    # --fmad=false: no fused multiply-add, so CUDA rounds exactly like the reference.
    nvcc = ["-O3", "--fmad=false", "-DSSD_FAST_PYTHON_MODULE"]
    sources += sorted(glob.glob("csrc/cuda/*.cu"))
    return cpp_extension.CUDAExtension(
        "ssd_fast._C", sources, extra_compile_args={"cxx": cxx, "nvcc": nvcc}, extra_link_args=["-fopenmp"]
    )


def _build_ext():
    from torch.utils.cpp_extension import BuildExtension

    use_ninja = shutil.which("ninja") is not None
    if use_ninja:
        # ninja compiles the sources in parallel; say how many at once (torch reads MAX_JOBS)
        os.environ.setdefault("MAX_JOBS", str(os.cpu_count() or 1))
        print(f"ssd_fast: compiling with ninja, MAX_JOBS={os.environ['MAX_JOBS']}")
    else:
        print("ssd_fast: ninja not found: compiling one source at a time (pip install ninja)")
    return BuildExtension.with_options(use_ninja=use_ninja)


setup(
    name="ssd_fast",
    version="0.1.0",
    description="Fast, exact Selective Synaptic Dampening (SSD) machine unlearning for PyTorch",
    packages=find_packages(include=["ssd_fast", "ssd_fast.*"]),
    python_requires=">=3.10",
    install_requires=["torch>=2.4", "safetensors", "tqdm", "numpy"],
    extras_require={"eval": ["scikit-learn", "matplotlib"], "test": ["pytest", "pytest-benchmark"]},
    ext_modules=[_extension()],
    cmdclass={"build_ext": _build_ext()},
    zip_safe=False,
)
