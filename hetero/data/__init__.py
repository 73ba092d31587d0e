"""Data: the dataset registry and its open-set split, the packaged emoji set, and the user's own folders and
manifests."""
