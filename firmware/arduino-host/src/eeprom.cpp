// eeprom.cpp - EEPROMClass (libraries/EEPROM/EEPROM.cpp of core 3.1.2) on the board's flash.
#include "EEPROM.h"

#include <string.h>
#include <unistd.h>

#include "host.h"

EEPROMClass EEPROM;

namespace {
constexpr size_t SECTOR = 4096; // SPI_FLASH_SEC_SIZE
// The sector the core's linker scripts reserve for EEPROM: 0x5000 below the end of flash,
// before RF calibration and the SDK's WiFi settings (eagle.flash.4m1m.ld:20: 0x405FB000).
constexpr uint64_t FROM_END = 0x5000;

off_t sector_at() { return static_cast<off_t>(host::config().flash_size - FROM_END); }
} // namespace

void EEPROMClass::begin(size_t size) {
    // EEPROM.cpp:46-74: at most a sector, rounded up to whole words, read from flash.
    if (size == 0) {
        return;
    }
    if (size > SECTOR) {
        size = SECTOR;
    }
    size = (size + 3) & ~static_cast<size_t>(3);
    if (data_ != nullptr && size != size_) {
        delete[] data_;
        data_ = nullptr;
    }
    if (data_ == nullptr) {
        data_ = new uint8_t[size];
    }
    size_ = size;
    if (pread(host::FLASH_FD, data_, size_, sector_at()) != static_cast<ssize_t>(size_)) {
        memset(data_, 0xff, size_);
    }
    dirty_ = false;
}

uint8_t EEPROMClass::read(int address) {
    if (address < 0 || static_cast<size_t>(address) >= size_ || data_ == nullptr) {
        return 0;
    }
    return data_[address];
}

void EEPROMClass::write(int address, uint8_t value) {
    if (address < 0 || static_cast<size_t>(address) >= size_ || data_ == nullptr) {
        return;
    }
    if (data_[address] != value) {
        data_[address] = value;
        dirty_ = true;
    }
}

bool EEPROMClass::commit() {
    // EEPROM.cpp:126-143: erase the whole sector, then write the copy.
    if (size_ == 0) {
        return false;
    }
    if (!dirty_) {
        return true;
    }
    if (data_ == nullptr) {
        return false;
    }
    uint8_t erased[SECTOR];
    memset(erased, 0xff, sizeof erased);
    if (pwrite(host::FLASH_FD, erased, sizeof erased, sector_at()) != sizeof erased ||
        pwrite(host::FLASH_FD, data_, size_, sector_at()) != static_cast<ssize_t>(size_)) {
        return false;
    }
    dirty_ = false;
    return true;
}

bool EEPROMClass::end() {
    if (size_ == 0) {
        return false;
    }
    const bool ok = commit();
    delete[] data_;
    data_ = nullptr;
    size_ = 0;
    dirty_ = false;
    return ok;
}

uint8_t *EEPROMClass::getDataPtr() {
    dirty_ = true;
    return data_;
}

const uint8_t *EEPROMClass::getConstDataPtr() const { return data_; }
