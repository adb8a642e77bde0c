"""What `make bench` runs (FULL) and what the pytest smoke test runs (SMOKE, well under a minute:
every part once, shorter, all parts at the same time but power accuracy, which runs first,
alone; its figures only need to be sane)."""

from dataclasses import dataclass, field


@dataclass
class Settings:
    name: str
    parallel: bool  # all parts at once (smoke) or one after another (timings undisturbed)
    steady_after: int = 5  # publishes before heap_steady is taken
    cycles: int = 5  # publish cycles measured for allocation
    heap_lo_k: int = 16
    heap_hi_k: int = 512
    heap_parallel: int = 4  # min_heapsize candidates per round, per kind
    hour_readings: int = 60  # an hour's readings at publish_interval_s 60
    hour_s: float = 120  # an hour at 30x (messages_per_hour)
    boot_reps: int = 3
    power_segments: list = field(default_factory=lambda: [(0, 250), (20, 2250), (36, 250), (50, 0)])
    loss_rates: list = field(default_factory=lambda: [1, 17, 50, 100, 200])
    bounce_rates: list = field(default_factory=lambda: [1, 17, 50])  # pulse_loss_bounce
    loss_stalls: list = field(default_factory=lambda: [0, 0.5, 2])
    loss_window_s: float = 8
    flash_cfg: dict = field(default_factory=dict)  # defaults: publish and persist every 60 s
    flash_window_s: float = 120
    flash_period_s: float = 60
    wear_writes: int = 3000  # file writes repeated to count erases per write
    wire_messages: int = 10
    outage_s: float = 84  # 42 readings at 2 s: two full backlog messages and a remainder
    ota_kb: int = 0  # the OTA package downloaded: 0 the whole device tree's, else its first N KB


FULL = Settings("full", parallel=False)

SMOKE = Settings("smoke", parallel=True, steady_after=2, cycles=2, heap_parallel=8,
                 hour_readings=4, hour_s=10, boot_reps=1,
                 power_segments=[(0, 1000), (6, 3000), (12, 0)], loss_rates=[50],
                 bounce_rates=[17],
                 loss_stalls=[0.5], loss_window_s=5,
                 flash_cfg={"publish_interval_s": 10, "persist_interval_s": 10},
                 flash_window_s=20, flash_period_s=10, wear_writes=300, wire_messages=3, outage_s=0,
                 ota_kb=16)
