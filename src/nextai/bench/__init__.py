"""GPU benchmarks: random-weight NF4 model shapes, recipe timing (`nextai bench`) and run planning."""
