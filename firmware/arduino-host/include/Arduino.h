// Arduino.h - the part of the ESP8266 Arduino core 3.1.2 API the relay firmware uses, for the
// host build that runs inside the virtual board. Behaviour follows the real core; see README.md.
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "HardwareSerial.h"
#include "IPAddress.h"
#include "Stream.h"
#include "WString.h"

typedef uint8_t byte;
typedef bool boolean;

// Milliseconds since boot, free-running and wrapping like the chip's
// (cores/esp8266/core_esp8266_wiring.cpp).
unsigned long millis();
unsigned long micros();
// Suspends the sketch for `ms` while the system task runs (core_esp8266_wiring.cpp:36-40).
void delay(unsigned long ms);

extern "C" {
// Lets the system task run once (core_esp8266_main.cpp:185-195).
void yield(void);
// Yields only if `interval_us` passed since the sketch last resumed (core_esp8266_main.cpp:200).
void optimistic_yield(uint32_t interval_us);
}

// The sketch.
void setup();
void loop();
