// EEPROM.h - the ESP8266 core's EEPROM emulation: a RAM copy of one flash sector, written back
// by commit() (libraries/EEPROM/EEPROM.cpp). The sector is the virtual board's flash file.
#pragma once

#include <stddef.h>
#include <stdint.h>

class EEPROMClass {
public:
    // Reads `size` bytes (at most a 4 KiB sector, rounded up to 4) from the EEPROM sector.
    void begin(size_t size);
    uint8_t read(int address);
    void write(int address, uint8_t value);
    // Erases the sector and writes the RAM copy back, if anything changed.
    bool commit();
    bool end();
    // Marks the copy changed: commit() will write it (EEPROM.cpp:145-148).
    uint8_t *getDataPtr();
    const uint8_t *getConstDataPtr() const;
    size_t length() const { return size_; }

private:
    uint8_t *data_ = nullptr;
    size_t size_ = 0;
    bool dirty_ = false;
};

extern EEPROMClass EEPROM;
