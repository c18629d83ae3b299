"""Networks: the base segmentation models (a name → constructor registry) and PRN."""
