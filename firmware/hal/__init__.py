# The hardware boundary. Everything that touches a pin, the radio, the watchdog, the clock or
# the filesystem mount lives behind one Hal object; logic modules receive it (or the functions
# they need) from main.py and import nothing from here.
#
# firmware/hal/esp32.py   the real board: machine.Pin, machine.Counter (PCNT), network.WLAN,
#                         machine.WDT, ntptime, machine.reset
# firmware/hal/unix.py    the MicroPython Unix port: LittleFS on a file-backed block device,
#                         pulses and Wi-Fi played from outside the process, host clock
#
# Both provide:
#   name; ticks_ms, ticks_us, ticks_diff, ticks_add (period 2**30 on the board), sleep_ms;
#   unique_id() -> bytes
#   mount(); mem_free(); epoch_ms() -> the RTC in Unix ms; epoch_ms(ms) sets it
#   ntp_time(host) -> the time server's Unix ms (checked by firmware/sync.py) or None; sets nothing
#   wifi_connect(ssid, password); wifi_disconnect(); wifi_connected(); wifi_status(); wifi_rssi()
#   pulse_input(pin, pull_up, edge, handler, use_hw) -> hardware counter (.take()) or None
#   led_setter(pin, inverted) -> callable(bool) or None, created off (any push-pull output:
#     the self-test drives its jumper pin with it, firmware/selftest.py)
#   boot_button_held(pin) -> bool: down now (never waits; firmware/setup_request.py times the
#     press)
#   wifi_connect() raises OSError when the radio refuses; the other wifi_* never raise
#   reset_cause() -> 0 power-up, 1 reset while powered (machine.reset(), a panic), 2 watchdog
#   idf_heap() -> (free, largest free block) of the ESP-IDF heap, or None
#   wdt_start(timeout_ms) (again: a new timeout, where the port allows); wdt_feed()
#   reset() (does not return)
#   socket, ssl: the modules umqtt.simple and the TLS context use
# and, for setup mode (firmware/setup_mode.py):
#   wifi_scan() -> [(ssid, rssi dBm, secured)]; ap_open(ssid, password) -> (ip, http port,
#   dns port): a WPA2 access point; ap_close(); ap_socket: the socket module its servers use
