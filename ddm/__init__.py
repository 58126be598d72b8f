"""Decoupled Diffusion Models (Huang et al., "Image to Zero and Zero to Noise").

The library: the decoupled forward process (``ddm.process``) and its h_t families (``ddm.families``),
the two-decoder U-Net (``ddm.nets``), the training objectives (``ddm.losses``), the samplers
(``ddm.sampling``), the baselines (``ddm.baselines``), data, metrics, statistics and tables.
"""

__version__ = "0.1.0"
