"""diffusers-style pipelines with their own denoising loop, shipped as ``ditaccel.pipelines``."""
