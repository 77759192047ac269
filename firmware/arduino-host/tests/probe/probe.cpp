// probe.cpp - a sketch that runs one Arduino call per command line on its Serial and prints what
// it returned and how long it took, so the layer's tests can check each semantic from outside.
//
// Commands (one per line): listen SRV PORT BACKLOG | accept SRV | avail C | peek C N |
// peekbuf C | consume C N | read C N | write C N | stop C | flush C | abort C | drop C |
// timeout C MS | nodelay C 0|1 | keepalive C IDLE INTV COUNT | delay MS | hold MS |
// rxsize N | txroom | serialwrite N | eeprom SIZE BYTE | eepromread SIZE | wifi SSID PSK |
// millis. C is a client slot, SRV a server slot. Each reply is one line starting with the
// command's name.
#include <stdarg.h>

#include <Arduino.h>
#include <EEPROM.h>
#include <ESP8266WiFi.h>

static WiFiServer servers[3] = {WiFiServer(0), WiFiServer(0), WiFiServer(0)};
static WiFiClient clients[8];
static char line[160];
static size_t len = 0;
static uint8_t buf[4096];

static void reply(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void reply(const char *fmt, ...) {
    char out[200];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, sizeof out - 2, fmt, ap);
    va_end(ap);
    if (n < 0) {
        n = 0;
    }
    if (static_cast<size_t>(n) > sizeof out - 3) {
        n = sizeof out - 3;
    }
    out[n++] = '\r';
    out[n++] = '\n';
    Serial.write(reinterpret_cast<const uint8_t *>(out), static_cast<size_t>(n));
}

static void hex(char *out, const uint8_t *data, size_t n) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[data[i] >> 4];
        out[2 * i + 1] = digits[data[i] & 15];
    }
    out[2 * n] = 0;
}

static void unhex(const char *in, char *out, size_t cap) {
    size_t n = 0;
    while (in[0] && in[1] && n + 1 < cap) {
        char pair[3] = {in[0], in[1], 0};
        out[n++] = static_cast<char>(strtol(pair, nullptr, 16));
        in += 2;
    }
    out[n] = 0;
}

void setup() {
    Serial.begin(115200);
    delay(5); // a wait in setup() is allowed: it must not be counted
    reply("probe ready");
}

static void run(char *cmd) {
    char *argv[6] = {};
    int argc = 0;
    for (char *tok = strtok(cmd, " "); tok && argc < 6; tok = strtok(nullptr, " ")) {
        argv[argc++] = tok;
    }
    if (argc == 0) {
        return;
    }
    const char *name = argv[0];
    auto arg = [&](int i) { return i < argc ? atol(argv[i]) : 0; };
    WiFiClient &c = clients[arg(1) & 7];
    const unsigned long t0 = millis();
    auto ms = [&]() { return millis() - t0; };

    if (!strcmp(name, "listen")) {
        WiFiServer &s = servers[arg(1) % 3];
        s.begin(static_cast<uint16_t>(arg(2)), static_cast<uint8_t>(arg(3)));
        reply("listen status=%u", s.status());
    } else if (!strcmp(name, "accept")) {
        WiFiServer &s = servers[arg(1) % 3];
        if (!s.hasClient()) {
            reply("accept none");
            return;
        }
        for (int i = 0; i < 8; i++) {
            if (!clients[i].connected() && !clients[i].available() && clients[i].status() == CLOSED) {
                clients[i] = s.accept();
                reply("accept slot=%d status=%u afw=%d", i, clients[i].status(),
                      clients[i].availableForWrite());
                return;
            }
        }
        reply("accept full");
    } else if (!strcmp(name, "avail")) {
        reply("avail n=%d afw=%d connected=%u status=%u peekavail=%u", c.available(),
              c.availableForWrite(), c.connected(), c.status(),
              static_cast<unsigned>(c.peekAvailable()));
    } else if (!strcmp(name, "peek")) {
        const size_t got = c.peekBytes(buf, static_cast<size_t>(arg(2)));
        reply("peek got=%u ms=%lu", static_cast<unsigned>(got), ms());
    } else if (!strcmp(name, "peekbuf")) {
        const size_t n = c.peekAvailable();
        char h[2 * 16 + 1];
        hex(h, reinterpret_cast<const uint8_t *>(c.peekBuffer()), n < 16 ? n : 16);
        reply("peekbuf n=%u head=%s", static_cast<unsigned>(n), h);
    } else if (!strcmp(name, "consume")) {
        c.peekConsume(static_cast<size_t>(arg(2)));
        reply("consume n=%d", c.available());
    } else if (!strcmp(name, "read")) {
        const int got = c.read(buf, static_cast<size_t>(arg(2)));
        char h[2 * 32 + 1];
        hex(h, buf, got > 32 ? 32 : (got > 0 ? static_cast<size_t>(got) : 0));
        reply("read got=%d head=%s", got, h);
    } else if (!strcmp(name, "write")) {
        memset(buf, 'w', sizeof buf);
        const size_t n = static_cast<size_t>(arg(2)) < sizeof buf ? static_cast<size_t>(arg(2)) : sizeof buf;
        const size_t wrote = c.write(buf, n);
        reply("write wrote=%u ms=%lu", static_cast<unsigned>(wrote), ms());
    } else if (!strcmp(name, "stop")) {
        const bool ok = c.stop(0);
        reply("stop ok=%d ms=%lu", ok, ms());
    } else if (!strcmp(name, "flush")) {
        const bool ok = c.flush(0);
        reply("flush ok=%d ms=%lu", ok, ms());
    } else if (!strcmp(name, "abort")) {
        c.abort();
        reply("abort ms=%lu", ms());
    } else if (!strcmp(name, "drop")) {
        c = WiFiClient();
        reply("drop ms=%lu", ms());
    } else if (!strcmp(name, "timeout")) {
        c.setTimeout(static_cast<unsigned long>(arg(2)));
        reply("timeout ok");
    } else if (!strcmp(name, "nodelay")) {
        c.setNoDelay(arg(2) != 0);
        reply("nodelay ok");
    } else if (!strcmp(name, "keepalive")) {
        c.keepAlive(static_cast<uint16_t>(arg(2)), static_cast<uint16_t>(arg(3)),
                    static_cast<uint8_t>(arg(4)));
        reply("keepalive enabled=%d", c.isKeepAliveEnabled());
    } else if (!strcmp(name, "delay")) {
        delay(static_cast<unsigned long>(arg(1)));
        reply("delay ms=%lu", ms());
    } else if (!strcmp(name, "hold")) {
        // Work that never yields: the UART keeps receiving meanwhile, as its ISR does.
        reply("hold start");
        while (ms() < static_cast<unsigned long>(arg(1))) {
        }
        yield();
        const int avail = Serial.available();
        const bool overrun = Serial.hasOverrun();
        const int got = Serial.read(buf, sizeof buf);
        char head[2 * 8 + 1], tail[2 * 8 + 1];
        hex(head, buf, got >= 8 ? 8 : 0);
        hex(tail, buf + (got >= 8 ? got - 8 : 0), got >= 8 ? 8 : 0);
        reply("hold avail=%d overrun=%d head=%s tail=%s", avail, overrun, head, tail);
    } else if (!strcmp(name, "rxsize")) {
        reply("rxsize size=%u", static_cast<unsigned>(Serial.setRxBufferSize(static_cast<size_t>(arg(1)))));
    } else if (!strcmp(name, "txroom")) {
        reply("txroom room=%d", Serial.availableForWrite());
    } else if (!strcmp(name, "serialwrite")) {
        // At a rate of the test's choosing, two writes back to back; then back to the rate
        // replies use, which starts the FIFO empty (uart_init resets it).
        Serial.begin(static_cast<unsigned long>(arg(3)));
        memset(buf, 'U', sizeof buf);
        const int before = Serial.availableForWrite();
        const unsigned long t0 = micros();
        Serial.write(buf, static_cast<size_t>(arg(1)));
        const unsigned long t1 = micros();
        const int mid = Serial.availableForWrite();
        Serial.write(buf, static_cast<size_t>(arg(2)));
        const unsigned long t2 = micros();
        Serial.begin(115200);
        reply("serialwrite before=%d mid=%d first_us=%lu second_us=%lu", before, mid, t1 - t0,
              t2 - t1);
    } else if (!strcmp(name, "eeprom")) {
        EEPROM.begin(static_cast<size_t>(arg(1)));
        for (long i = 0; i < arg(1); i++) {
            EEPROM.write(static_cast<int>(i), static_cast<uint8_t>(arg(2)));
        }
        reply("eeprom commit=%d length=%u", EEPROM.commit(), static_cast<unsigned>(EEPROM.length()));
    } else if (!strcmp(name, "eepromread")) {
        EEPROM.begin(static_cast<size_t>(arg(1)));
        char h[2 * 16 + 1];
        hex(h, EEPROM.getConstDataPtr(), arg(1) < 16 ? static_cast<size_t>(arg(1)) : 16);
        reply("eepromread head=%s", h);
    } else if (!strcmp(name, "wifi")) {
        char ssid[40], psk[70];
        unhex(argc > 1 ? argv[1] : "", ssid, sizeof ssid);
        unhex(argc > 2 ? argv[2] : "", psk, sizeof psk);
        WiFi.mode(WIFI_STA);
        const wl_status_t st = WiFi.begin(ssid, psk[0] ? psk : nullptr);
        reply("wifi status=%d ip=%s", st, WiFi.localIP().toString().c_str());
    } else if (!strcmp(name, "millis")) {
        reply("millis now=%lu", millis());
    } else {
        reply("unknown %s", name);
    }
}

void loop() {
    int b;
    while ((b = Serial.read()) >= 0) {
        if (b == '\n') {
            line[len] = 0;
            len = 0;
            run(line);
            return;
        }
        if (b != '\r' && len + 1 < sizeof line) {
            line[len++] = static_cast<char>(b);
        }
    }
}
