"""DA-CLIP (Luo et al., ICLR 2024): a degradation-aware controller around a frozen open_clip CLIP."""
