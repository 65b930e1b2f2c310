"""How much to draft: the k auto rule (draft_length), the drafter's calibration, the measured
costs of passes, and the warm-up that seeds them."""
