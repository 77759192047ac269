// The NodeMCU relay: a thin pump between WiFiServer/WiFiClient, HardwareSerial and the portable
// relay core (firmware/core), which holds all of the logic.
//
// Boot: Serial at RELAY_BAUD, the boot line and the provisioning exchange (credentials kept in
// the EEPROM sector), WiFi in station mode with automatic reconnection, then the data server on
// RELAY_PORT, the status channel on RELAY_STATUS_PORT, and the banner.
//
// loop() never waits. On the ESP8266 core 3.1.2 many WiFiClient calls block the whole relay
// (firmware/arduino-host/README.md lists them), so this pump uses only calls that take what is
// there: the peek buffer for input, writes that fit lwIP's buffers for output, and closing by
// letting go of the last WiFiClient, which does not wait for acknowledgements.
#include <Arduino.h>
#include <EEPROM.h>
#include <ESP8266WiFi.h>

#include "provision.h"
#include "relay.h"

#ifndef RELAY_BUILD_ID
#error "RELAY_BUILD_ID is set by build_id.py (extra_scripts in platformio.ini)"
#endif
#ifndef RELAY_BAUD
#define RELAY_BAUD 115200
#endif
#ifndef RELAY_PORT
#define RELAY_PORT 8888
#endif
#ifndef RELAY_STATUS_PORT
#define RELAY_STATUS_PORT 8889
#endif
// A client that vanishes (power, roaming) is dropped after idle + interval * count seconds.
#ifndef RELAY_KEEPALIVE_IDLE_S
#define RELAY_KEEPALIVE_IDLE_S 30
#endif
#ifndef RELAY_KEEPALIVE_INTERVAL_S
#define RELAY_KEEPALIVE_INTERVAL_S 5
#endif
#ifndef RELAY_KEEPALIVE_COUNT
#define RELAY_KEEPALIVE_COUNT 3
#endif

// What relay-hil and the virtual board read out of the image to name this build. The boot line
// and the banner print the id from here, so the linker keeps the record.
extern "C" const char relay_build_id_record[] = "relay-build-id:" RELAY_BUILD_ID;
static const char *const build_id = relay_build_id_record + sizeof "relay-build-id:" - 1;

// The UART receive ring, for while loop() is elsewhere: 1 KiB is 89 ms of input at 115200 and
// 11 ms at 921600; above 1 Mbaud, 4 KiB keeps 13.6 ms at 3 Mbaud, where 1 KiB lasts 3.4 ms.
static const size_t UART_RX_BUFFER = RELAY_BAUD > 1000000 ? 4096 : 1024;
// Most UART bytes handed to the core per pass; the core never takes more than a queue holds.
static const size_t UART_CHUNK = 256;

// lwIP's send pools in the core's lwip2-536-feat build (tools/sdk/lwip2/include/lwipopts.h):
// segments of TCP_MSS bytes (set by the build), and 10 of them (MEMP_NUM_TCP_SEG) for every
// connection together. A write that finds none free blocks in WiFiClient::write for up to
// 5 s, so each relay client keeps at most SEGMENTS_PER_CLIENT writes of at most one segment in
// flight, and the status channel and refusals one more: within the pool, with one left for a
// FIN or a SYN-ACK.
static const size_t SEGMENT = TCP_MSS;
static const size_t SEGMENT_POOL = 10;
static const size_t SEGMENTS_PER_CLIENT = 2;
static_assert(RELAY_MAX_CLIENTS * SEGMENTS_PER_CLIENT + 2 <= SEGMENT_POOL,
              "relay clients, the status channel and a FIN must fit lwIP's segment pool");

static relay_t relay;
static WiFiServer server(RELAY_PORT);
static WiFiServer status_server(RELAY_STATUS_PORT);
static char text[RELAY_STATUS_MAX];

// A connection we write to, and the writes lwIP has not had acknowledged yet.
struct Peer {
    WiFiClient client;
    size_t sndbuf = 0; // availableForWrite() of the fresh connection: lwIP's TCP_SND_BUF
    size_t in_flight[SEGMENTS_PER_CLIENT] = {};
    size_t writes = 0;

    void take(const WiFiClient &c) {
        client = c;
        sndbuf = static_cast<size_t>(client.availableForWrite());
        writes = 0;
    }

    // Acknowledged bytes free whole writes, oldest first: lwIP frees a segment only once all
    // of it is acknowledged.
    void settle() {
        const size_t room = static_cast<size_t>(client.availableForWrite());
        size_t unacked = sndbuf > room ? sndbuf - room : 0;
        size_t total = 0;
        for (size_t i = 0; i < writes; i++) {
            total += in_flight[i];
        }
        size_t acked = total > unacked ? total - unacked : 0;
        while (writes > 0 && in_flight[0] <= acked) {
            acked -= in_flight[0];
            for (size_t i = 1; i < writes; i++) {
                in_flight[i - 1] = in_flight[i];
            }
            writes--;
        }
    }

    // What one write may carry now: nothing past the send buffer, at most one segment, and
    // nothing while the budget's writes are all in flight.
    size_t room(size_t budget) {
        settle();
        if (writes >= budget) {
            return 0;
        }
        const size_t avail = static_cast<size_t>(client.availableForWrite());
        return avail < SEGMENT ? avail : SEGMENT;
    }

    // Writes len bytes, at most what room() just reported, and counts the write in flight.
    size_t write(const uint8_t *data, size_t len) {
        const size_t wrote = client.write(data, len);
        if (wrote > 0) {
            in_flight[writes++] = wrote;
        }
        return wrote;
    }

    // Writes what lwIP takes now, within room(); nothing when there is no room, as a write of
    // 0 bytes returns 0 at once (WiFiClient.cpp:215).
    size_t send(const uint8_t *data, size_t n, size_t budget) {
        const size_t fits = room(budget);
        return write(data, n < fits ? n : fits);
    }

    // Lets go without waiting: the last reference closes the connection (FIN after what is
    // queued) with no flush, where stop() and abort() wait up to 300 ms for acknowledgements.
    void release() { client = WiFiClient(); }
};

static Peer peers[RELAY_MAX_CLIENTS];
// The status channel sends its text in segments across passes, then closes.
static Peer status_peer;
static size_t status_len = 0;
static size_t status_sent = 0;

static void say(const char *s, size_t n) {
    Serial.write(reinterpret_cast<const uint8_t *>(s), n < sizeof text ? n : sizeof text - 1);
}

// Prints the boot line and takes credentials from the UART: for RELAY_PROVISION_LISTEN_MS
// when some are stored, until some arrive when none are.
static void provision(relay_wifi_t *wifi) {
    bool have = relay_wifi_decode(EEPROM.getConstDataPtr(), RELAY_CRED_RECORD_SIZE, wifi);
    say(text, relay_format_boot(have ? wifi : nullptr, build_id, text, sizeof text));
    relay_provision_t request = {};
    const uint32_t start = millis();
    while (!have || millis() - start < RELAY_PROVISION_LISTEN_MS) {
        const int c = Serial.read();
        if (c < 0) {
            delay(1); // feeds the watchdog and the WiFi stack while waiting
            continue;
        }
        relay_wifi_t got = {};
        const int result = relay_provision_input(&request, static_cast<uint8_t>(c), &got);
        if (result == RELAY_PROV_NONE) {
            continue;
        }
        say(text, relay_format_provision_reply(result, &got, text, sizeof text));
        if (result == RELAY_PROV_OK) {
            relay_wifi_encode(&got, EEPROM.getDataPtr(), RELAY_CRED_RECORD_SIZE);
            EEPROM.commit();
            *wifi = got;
            return;
        }
    }
}

static void join(const relay_wifi_t *wifi) {
    WiFi.persistent(false); // the credentials live in the relay's record, not the SDK's
    WiFi.mode(WIFI_STA);
    WiFi.setSleepMode(WIFI_NONE_SLEEP); // modem sleep would add up to a beacon interval of latency
    WiFi.setAutoReconnect(true);
    WiFi.begin(wifi->ssid, wifi->psk_len > 0 ? wifi->psk : nullptr);
    uint32_t last = millis();
    while (WiFi.status() != WL_CONNECTED) {
        delay(100);
        if (millis() - last >= 10000) {
            last = millis();
            const int n = snprintf(text, sizeof text, "relay wifi joining ssid=%s status=%d\r\n",
                                   wifi->ssid, static_cast<int>(WiFi.status()));
            say(text, n > 0 ? static_cast<size_t>(n) : 0);
        }
    }
}

void setup() {
    Serial.begin(RELAY_BAUD);
    Serial.setRxBufferSize(UART_RX_BUFFER);
    EEPROM.begin(RELAY_CRED_RECORD_SIZE);
    relay_wifi_t wifi = {};
    provision(&wifi);
    join(&wifi);

    relay_config_t cfg;
    relay_config_default(&cfg);
    const int rc = relay_init(&relay, &cfg, millis());
    if (rc != RELAY_OK) {
        const int n = snprintf(text, sizeof text, "relay config error: %s\r\n", relay_strerror(rc));
        say(text, n > 0 ? static_cast<size_t>(n) : 0);
        for (;;) {
            delay(1000);
        }
    }
    server.begin(RELAY_PORT, RELAY_MAX_CLIENTS + 1);
    server.setNoDelay(true);
    if (RELAY_STATUS_PORT != 0) {
        status_server.begin(RELAY_STATUS_PORT, 1);
    }

    const String ip = WiFi.localIP().toString();
    relay_banner_info_t info = {ip.c_str(), build_id, RELAY_PORT, RELAY_STATUS_PORT};
    say(text, relay_format_banner(&relay, &info, text, sizeof text));
}

// A peer that closed or reset, and left nothing unread, frees its slot before anyone new is
// accepted, so a connection that lwIP reset to make room can be replaced at once.
static void reap_closed() {
    for (int slot = 0; slot < RELAY_MAX_CLIENTS; slot++) {
        WiFiClient &c = peers[slot].client;
        if (relay_client_open(&relay, slot) && !c.connected() && c.available() == 0) {
            relay_client_closed(&relay, slot); // drops any unterminated line
            peers[slot].release();
        }
    }
}

static void accept_clients() {
    while (server.hasClient()) {
        WiFiClient c = server.accept();
        const int slot = relay_accept(&relay);
        if (slot == RELAY_REJECTED) {
            // One short segment into an empty send buffer, then c goes out of scope: closed.
            const size_t n = relay_format_reject(&relay, text, sizeof text);
            c.write(reinterpret_cast<const uint8_t *>(text), n);
            continue;
        }
        // A peer that already reset has no PCB, and keepAlive() would dereference it.
        if (c.connected()) {
            c.keepAlive(RELAY_KEEPALIVE_IDLE_S, RELAY_KEEPALIVE_INTERVAL_S, RELAY_KEEPALIVE_COUNT);
        }
        peers[slot].take(c);
    }
    // One status reply at a time; the next waits in the listener's backlog.
    if (status_len == 0 && status_server.hasClient()) {
        status_peer.take(status_server.accept());
        status_peer.client.setNoDelay(true);
        const size_t n = relay_format_status(&relay, text, sizeof text);
        status_len = n < sizeof text ? n : sizeof text - 1;
        status_sent = 0;
    }
}

static void send_status() {
    if (status_len == 0) {
        return;
    }
    if (status_peer.client.connected()) {
        status_sent += status_peer.send(reinterpret_cast<const uint8_t *>(text) + status_sent,
                                        status_len - status_sent, 1);
        if (status_sent < status_len) {
            return;
        }
    }
    status_peer.release();
    status_len = 0;
}

static void service_client(int slot) {
    Peer &p = peers[slot];
    // Each write fills a segment from the queue, across its ring's end: a write cut short there
    // would spend one of the client's two segments per round trip on a few bytes, too few to
    // carry a 3 Mbaud UART.
    uint8_t segment[SEGMENT];
    size_t room;
    size_t n;
    while ((room = p.room(SEGMENTS_PER_CLIENT)) > 0 &&
           (n = relay_client_copy(&relay, slot, segment, room)) > 0) {
        const size_t wrote = p.write(segment, n);
        if (wrote == 0) {
            break;
        }
        relay_client_consume(&relay, slot, wrote);
    }
    // Only what the core takes is consumed; the rest stays in lwIP, so TCP pushes back.
    while ((n = p.client.peekAvailable()) > 0) {
        const uint8_t *in = reinterpret_cast<const uint8_t *>(p.client.peekBuffer());
        const size_t took = relay_client_input(&relay, slot, in, n);
        if (took > 0) {
            p.client.peekConsume(took);
        }
        if (took < n) {
            break;
        }
    }
}

void loop() {
    relay_tick(&relay, millis());
    if (Serial.hasOverrun()) {
        relay_uart_overrun(&relay);
    }
    reap_closed();
    accept_clients();
    for (int slot = 0; slot < RELAY_MAX_CLIENTS; slot++) {
        if (relay_client_open(&relay, slot)) {
            service_client(slot);
        }
    }
    int closing;
    while ((closing = relay_next_close(&relay)) >= 0) {
        peers[closing].release(); // stalled: the core has already freed the slot
    }
    send_status();

    uint8_t uart[UART_CHUNK];
    const int avail = Serial.available();
    const size_t want = avail > 0 ? static_cast<size_t>(avail) : 0;
    const int got = want > 0 ? Serial.read(uart, want < sizeof uart ? want : sizeof uart) : 0;
    if (got > 0) {
        relay_uart_input(&relay, uart, static_cast<size_t>(got));
    }
    const uint8_t *data;
    size_t n;
    while ((n = relay_uart_pending(&relay, &data)) > 0) {
        // uart_write waits once the FIFO holds 127 bytes (uart.cpp:504-507), one short of the
        // room availableForWrite reports: writing all of it would block for a byte's time.
        const size_t room = static_cast<size_t>(Serial.availableForWrite());
        if (room <= 1) {
            break;
        }
        relay_uart_consume(&relay, Serial.write(data, n < room - 1 ? n : room - 1));
    }
}
