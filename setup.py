"""GPU kernel workbench: check, time and roofline Triton and raw CUDA kernels against the library baseline."""

from setuptools import find_packages, setup

setup(
    name="gpu-kernel-workbench",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.10",
    packages=find_packages(include=["harness", "harness.*", "kernels", "kernels.*", "roofline", "roofline.*"]),
    # the CUDA interpreter compiles user code against these at run time
    package_data={"harness.interp": ["include/*.h", "runtime/*.cpp", "README.md"]},
    install_requires=[
        "torch>=2.4",  # install the CPU build first on machines without a GPU: pip install torch==2.13.0
        "triton>=3.2",
        "numpy",
        "nvidia-ml-py",
        "matplotlib",
        "rich",
        "filelock",  # the nvcc cache: one compile per entry across parallel workers
    ],
    extras_require={
        "cuda": ["pycuda", "cuda-python"],
        # faiss: the kNN family's second oracle; xdist: `make test` runs two workers
        "test": ["pytest", "pytest-xdist", "pytest-benchmark", "ruff", "faiss-cpu"],
        "slurm": ["submitit"],
        "faiss": ["faiss-cpu"],
    },
)
