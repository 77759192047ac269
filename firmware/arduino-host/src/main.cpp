// main.cpp - boots the sketch as the core's loop task does: setup() once, then loop() forever
// with the system task between passes (core_esp8266_main.cpp:250-264).
#include "Arduino.h"
#include "host.h"

namespace {
// How long an idle loop sleeps at most before it runs again: the sketch's own timers (a stall
// timeout, a poll) see the clock move at least this often.
constexpr uint64_t IDLE_TICK_US = 10000;
} // namespace

int main() {
    host::init();
    setup();
    for (;;) {
        const uint64_t before = host::progress_epoch();
        host::set_in_loop(true);
        loop();
        host::set_in_loop(false);
        host::system_task();
        // Nothing moved in a whole pass: a pass now would do the same, so sleep until an event.
        if (host::progress_epoch() == before) {
            host::idle(IDLE_TICK_US);
        }
    }
}
