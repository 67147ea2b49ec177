"""Benches, the demo and the robustness benchmark: tools around the product, not part of it (only the CLI imports them)."""
