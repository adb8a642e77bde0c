# boot.py runs before main.py on the ESP32. It is deliberately empty: an exception here drops
# the board to the REPL with no last-chance handler, so everything the meter does happens in
# main.py, under one.
