"""What several test modules share: where the checkout is and the environment of a subprocess
(`locations`), fake CPU devices (`devices`), bounded waits (`waiting`), a dead proxy
(`dead_proxy`), chi-square power (`chi_square`), runs of `jaxformer train` in a subprocess
(`train_subprocess`), the offline guard every process loads (`offline/`) and reference
figures (`data/`)."""
