"""`make bench`: the firmware's figures beside a naive baseline's, measured in the same run on
the MicroPython Unix port against tbsim (docs/benchmarks.md).

    trees     device trees under build/bench (firmware, baseline, each with or without the probe)
    rig       tbsim, meters, pulse players          proxy     byte-counting TCP proxy
    isr       isr_alloc_bytes                       heap      heap figures, min_heapsize
    timing    boot times                            power     power error, zero-power delay
    loss      pulse loss under main-loop stalls     wire      bytes per reading
    hour      messages per hour                     flash     flash writes, power-cut loss
    report    results.json and the table            settings  full and smoke
"""
