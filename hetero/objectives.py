"""Loss presets: plain data, so the CLI and configs read them without torch."""

# Presets for `hetero train --objective` (loss term -> weight); the terms themselves live in hetero.training.losses.
OBJECTIVES: dict[str, dict[str, float]] = {
    "bct": {"classification": 1.0, "bct": 1.0},
    "bct_regression": {"classification": 1.0, "bct": 1.0, "regression_cosine": 1.0},
    "contrastive": {"classification": 1.0, "contrastive": 1.0},
    "independent": {"classification": 1.0},
    "l2": {"regression_l2": 1.0},
    # least squares before normalisation: convex for a linearised member (train --lqf), the same loss for any other
    "lqf": {"regression_linear": 1.0},
    "distillation": {"classification": 1.0, "distillation": 1.0},
    # upgrades (cloud v2 into v1's space, v1 as --cloud): BCT plus distillation from v1, focal or uniform
    "bct_focal": {"classification": 1.0, "bct": 1.0, "focal_distillation": 1.0},
    "bct_kd": {"classification": 1.0, "bct": 1.0, "plain_distillation": 1.0},
}
