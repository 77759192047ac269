// WString.h - a minimal Arduino String: what IPAddress::toString() hands the sketch.
#pragma once

#include <stddef.h>

#include <string>

class String {
public:
    String() = default;
    String(const char *s) : s_(s != nullptr ? s : "") {}
    const char *c_str() const { return s_.c_str(); }
    size_t length() const { return s_.size(); }
    String &operator+=(const char *s) {
        s_ += s;
        return *this;
    }
    bool operator==(const char *s) const { return s_ == s; }

private:
    std::string s_;
};
