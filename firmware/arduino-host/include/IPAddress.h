// IPAddress.h - an IPv4 address, as the ESP8266 core's IPAddress prints and compares it.
#pragma once

#include <stdint.h>

#include "WString.h"

class IPAddress {
public:
    IPAddress() = default;
    explicit IPAddress(uint32_t addr) : addr_(addr) {}
    IPAddress(uint8_t a, uint8_t b, uint8_t c, uint8_t d)
        : addr_(static_cast<uint32_t>(a) | static_cast<uint32_t>(b) << 8 |
                static_cast<uint32_t>(c) << 16 | static_cast<uint32_t>(d) << 24) {}
    // Network order in memory, as lwIP keeps it: the first octet is the low byte.
    operator uint32_t() const { return addr_; }
    uint8_t operator[](int i) const { return static_cast<uint8_t>(addr_ >> (8 * i)); }
    bool isSet() const { return addr_ != 0; }
    String toString() const;

private:
    uint32_t addr_ = 0;
};
