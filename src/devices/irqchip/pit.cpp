#include "devices/irqchip/pit.h"

#include <algorithm>

#include "base/log.h"
#include "base/log_limit.h"

namespace vessel {

namespace {

constexpr uint64_t kNsPerSecond = 1'000'000'000;
constexpr uint64_t kRefreshPeriodNs = 15'085; // port 0x61 bit 4 toggles at ~66 kHz

constexpr uint8_t kSpeakerGate2 = 0x01;
constexpr uint8_t kSpeakerWritable = 0x0f;
constexpr uint8_t kSpeakerRefresh = 0x10;
constexpr uint8_t kSpeakerOut2 = 0x20;

// Control word.
constexpr uint8_t kReadBack = 3; // select-counter field value of the read-back command
constexpr uint8_t kReadBackNoCount = 0x20;
constexpr uint8_t kReadBackNoStatus = 0x10;

uint32_t from_bcd(uint16_t value)
{
    return (value >> 12 & 0xf) * 1000 + (value >> 8 & 0xf) * 100 + (value >> 4 & 0xf) * 10 + (value & 0xf);
}

uint16_t to_bcd(uint32_t value)
{
    return static_cast<uint16_t>(
        (value / 1000 % 10) << 12 | (value / 100 % 10) << 8 | (value / 10 % 10) << 4 | (value % 10));
}

bool periodic(uint8_t mode)
{
    return mode == 2 || mode == 3;
}

bool hardware_triggered(uint8_t mode)
{
    return mode == 1 || mode == 5;
}

} // namespace

Pit::Pit(VirtualClock& clock, IrqLine irq0)
    : m_clock(clock)
    , m_irq0(std::move(irq0))
{
    m_channels[2].gate = false; // port 0x61 bit 0 is clear at power-on
}

uint64_t Pit::elapsed_ticks(const Channel& ch, uint64_t now) const
{
    uint64_t ns = ch.counted_ns;
    if (ch.running && now > ch.start_ns)
        ns += now - ch.start_ns;
    return static_cast<uint64_t>(static_cast<unsigned __int128>(ns) * kFrequencyHz / kNsPerSecond);
}

uint16_t Pit::counter_value(const Channel& ch, uint64_t now) const
{
    const uint64_t modulus = ch.bcd ? 10000 : 0x10000;
    const uint64_t n = ch.reload;
    uint64_t value = n;
    if (ch.loaded && !(hardware_triggered(ch.mode) && !ch.triggered)) {
        const uint64_t d = elapsed_ticks(ch, now);
        switch (ch.mode) {
        case 2: value = n - d % n; break;
        case 3: {
            // Counts down by two through each half period (first half ceil(N/2) clocks).
            const uint64_t phase = d % n;
            const uint64_t first = (n + 1) / 2;
            const uint64_t half = phase < first ? phase : phase - first;
            const uint64_t top = n & ~uint64_t { 1 };
            value = top > 2 * half ? top - 2 * half : 2;
            break;
        }
        default: value = (n + modulus - d % modulus) % modulus; break;
        }
    }
    value %= modulus;
    return ch.bcd ? to_bcd(static_cast<uint32_t>(value)) : static_cast<uint16_t>(value);
}

bool Pit::output(const Channel& ch, uint64_t now) const
{
    if (!ch.loaded)
        return ch.mode != 0;
    const uint64_t n = ch.reload;
    const uint64_t d = elapsed_ticks(ch, now);
    switch (ch.mode) {
    case 0: return d >= n;
    case 1: return !ch.triggered || d >= n;
    case 2: return !ch.gate || d % n != n - 1;
    case 3: return !ch.gate || d % n < (n + 1) / 2;
    case 4: return d != n;
    case 5: return !ch.triggered || d != n;
    default: return true;
    }
}

uint8_t Pit::status(const Channel& ch, uint64_t now) const
{
    return static_cast<uint8_t>(
        (output(ch, now) ? 0x80 : 0) | (ch.null_count ? 0x40 : 0) | ch.access << 4 | ch.mode << 1 | (ch.bcd ? 1 : 0));
}

void Pit::read(uint64_t offset, std::span<uint8_t> data)
{
    std::lock_guard lock(m_mutex);
    const uint64_t now = m_clock.now_ns();
    for (size_t i = 0; i < data.size(); ++i)
        data[i] = offset + i < 3 ? read_channel(m_channels[offset + i], now) : 0xff;
}

void Pit::write(uint64_t offset, std::span<const uint8_t> data)
{
    std::lock_guard lock(m_mutex);
    const uint64_t now = m_clock.now_ns();
    for (size_t i = 0; i < data.size(); ++i) {
        if (offset + i < 3)
            write_channel(m_channels[offset + i], data[i], now);
        else if (offset + i == kControlOffset)
            write_control(data[i], now);
    }
    publish_deadline();
}

uint8_t Pit::read_channel(Channel& ch, uint64_t now)
{
    if (ch.latched_status) {
        const uint8_t value = *ch.latched_status;
        ch.latched_status.reset();
        return value;
    }
    if (ch.latched_count) {
        const uint16_t value = *ch.latched_count;
        bool msb = ch.access == 2;
        if (ch.access == 3) {
            msb = ch.latched_msb_next;
            ch.latched_msb_next = !msb;
        }
        if (ch.access != 3 || msb)
            ch.latched_count.reset();
        return static_cast<uint8_t>(msb ? value >> 8 : value);
    }
    const uint16_t value = counter_value(ch, now);
    bool msb = ch.access == 2;
    if (ch.access == 3) {
        msb = ch.read_msb_next;
        ch.read_msb_next = !msb;
    }
    return static_cast<uint8_t>(msb ? value >> 8 : value);
}

void Pit::write_channel(Channel& ch, uint8_t value, uint64_t now)
{
    switch (ch.access) {
    case 1: load_count(ch, value, now); break;
    case 2: load_count(ch, static_cast<uint16_t>(value << 8), now); break;
    default:
        if (!ch.write_msb_next) {
            ch.write_lsb = value;
            ch.write_msb_next = true;
        } else {
            ch.write_msb_next = false;
            load_count(ch, static_cast<uint16_t>(ch.write_lsb | value << 8), now);
        }
        break;
    }
}

void Pit::write_control(uint8_t value, uint64_t now)
{
    const uint8_t select = value >> 6;
    if (select == kReadBack) {
        for (unsigned i = 0; i < 3; ++i) {
            if (!(value & (2u << i)))
                continue;
            Channel& ch = m_channels[i];
            if (!(value & kReadBackNoCount) && !ch.latched_count) {
                ch.latched_count = counter_value(ch, now);
                ch.latched_msb_next = false;
            }
            if (!(value & kReadBackNoStatus) && !ch.latched_status)
                ch.latched_status = status(ch, now);
        }
        return;
    }
    Channel& ch = m_channels[select];
    const uint8_t access = (value >> 4) & 3;
    if (access == 0) {
        // Counter latch command; a second one before the latched count is read is ignored.
        if (!ch.latched_count) {
            ch.latched_count = counter_value(ch, now);
            ch.latched_msb_next = false;
        }
        return;
    }
    uint8_t mode = (value >> 1) & 7;
    if (mode > 5)
        mode -= 4; // 6 and 7 are 2 and 3
    const bool gate = ch.gate;
    ch = Channel {};
    ch.gate = gate;
    ch.mode = mode;
    ch.access = access;
    ch.bcd = value & 1;
    ch.reload = ch.bcd ? 10000 : 0x10000;
}

void Pit::load_count(Channel& ch, uint16_t value, uint64_t now)
{
    uint32_t n = ch.bcd ? from_bcd(value) : value;
    if (n == 0)
        n = ch.bcd ? 10000 : 0x10000;
    if (n == 1 && periodic(ch.mode)) {
        if (log_allowed(m_log_count))
            log_debug("pit: count 1 is illegal in mode {}; using 2", ch.mode);
        n = 2;
    }
    ch.reload = n;
    ch.loaded = true;
    ch.null_count = false;
    ch.edges_done = 0;
    ch.counted_ns = 0;
    ch.triggered = false;
    ch.start_ns = now;
    ch.running = !hardware_triggered(ch.mode) && ch.gate;
}

void Pit::set_gate(Channel& ch, bool gate, uint64_t now)
{
    if (gate == ch.gate)
        return;
    ch.gate = gate;
    if (!ch.loaded)
        return;
    if (gate) {
        if (hardware_triggered(ch.mode)) {
            ch.triggered = true;
            ch.counted_ns = 0;
            ch.edges_done = 0;
        } else if (periodic(ch.mode)) {
            ch.counted_ns = 0; // a rising gate reloads the counter
            ch.edges_done = 0;
        }
        ch.start_ns = now;
        ch.running = true;
    } else if (!hardware_triggered(ch.mode)) {
        if (ch.running && now > ch.start_ns)
            ch.counted_ns += now - ch.start_ns;
        ch.running = false;
    }
}

uint8_t Pit::read_speaker_port()
{
    std::lock_guard lock(m_mutex);
    const uint64_t now = m_clock.now_ns();
    uint8_t value = m_speaker;
    if ((now / kRefreshPeriodNs) & 1)
        value |= kSpeakerRefresh;
    if (output(m_channels[2], now))
        value |= kSpeakerOut2;
    return value;
}

void Pit::write_speaker_port(uint8_t value)
{
    std::lock_guard lock(m_mutex);
    m_speaker = value & kSpeakerWritable;
    set_gate(m_channels[2], value & kSpeakerGate2, m_clock.now_ns());
}

uint64_t Pit::tick_time(const Channel& ch, uint64_t tick) const
{
    const unsigned __int128 ns
        = (static_cast<unsigned __int128>(tick) * kNsPerSecond + kFrequencyHz - 1) / kFrequencyHz;
    const unsigned __int128 at = ch.start_ns + ns - ch.counted_ns;
    return at >= UINT64_MAX ? UINT64_MAX - 1 : static_cast<uint64_t>(at);
}

uint64_t Pit::next_edge(const Channel& ch) const
{
    if (!ch.loaded || !ch.running)
        return UINT64_MAX;
    switch (ch.mode) {
    case 0:
    case 4: return ch.edges_done == 0 ? tick_time(ch, ch.reload) : UINT64_MAX;
    case 2:
    case 3: return tick_time(ch, (ch.edges_done + 1) * ch.reload);
    default: return UINT64_MAX; // modes 1 and 5 need a gate edge, which channel 0 never sees
    }
}

void Pit::publish_deadline()
{
    m_deadline.store(next_edge(m_channels[0]), std::memory_order_release);
}

void Pit::run_timers(uint64_t now_ns)
{
    if (now_ns < m_deadline.load(std::memory_order_acquire))
        return;
    bool fire = false;
    {
        std::lock_guard lock(m_mutex);
        Channel& ch = m_channels[0];
        if (next_edge(ch) <= now_ns) {
            fire = true;
            // Every edge up to now counts as delivered: one IRQ however late we are.
            ch.edges_done = periodic(ch.mode) ? elapsed_ticks(ch, now_ns) / ch.reload : 1;
        }
        publish_deadline();
    }
    if (fire)
        m_irq0.pulse();
}

// --- Snapshots ---

namespace {

// KVM's RW_STATE_* (the access sequence of a channel's count register).
constexpr uint8_t kRwLsb = 1, kRwMsb = 2, kRwWord0 = 3, kRwWord1 = 4;
constexpr uint8_t kStatusNullCount = 0x40;

} // namespace

PitChannelState Pit::save_channel(const Channel& ch, uint64_t now) const
{
    PitChannelState s;
    s.count = ch.loaded ? ch.reload : 0;
    if (ch.latched_count) {
        s.latched_count = *ch.latched_count;
        s.count_latched = ch.access == 3 ? (ch.latched_msb_next ? kRwMsb : kRwWord0) : ch.access;
    }
    if (ch.latched_status) {
        s.status_latched = 1;
        s.status = *ch.latched_status;
    } else {
        const bool null_count = !ch.loaded || (hardware_triggered(ch.mode) && !ch.triggered);
        s.status = static_cast<uint8_t>((status(ch, now) & ~kStatusNullCount) | (null_count ? kStatusNullCount : 0));
    }
    s.read_state = ch.access == 3 ? (ch.read_msb_next ? kRwWord1 : kRwWord0) : ch.access;
    s.write_state = ch.access == 3 ? (ch.write_msb_next ? kRwWord1 : kRwWord0) : ch.access;
    s.write_latch = ch.write_lsb;
    s.rw_mode = ch.access;
    s.mode = ch.mode;
    s.bcd = ch.bcd;
    s.gate = ch.gate;
    // Elapsed counting time is now - count_load_time_ns while the channel runs; a stopped
    // channel keeps what it counted (counted_ns) as if it had been loaded that long before now.
    const int64_t counted = static_cast<int64_t>(ch.counted_ns);
    if (ch.running)
        s.count_load_time_ns = static_cast<int64_t>(ch.start_ns) - counted;
    else if (ch.loaded && !hardware_triggered(ch.mode))
        s.count_load_time_ns = static_cast<int64_t>(now) - counted;
    else
        s.count_load_time_ns = static_cast<int64_t>(ch.start_ns);
    return s;
}

void Pit::restore_channel(Channel& ch, const PitChannelState& s, uint64_t now)
{
    ch = Channel {};
    uint8_t mode = s.mode;
    if (mode == 6 || mode == 7)
        mode -= 4;
    ch.mode = mode <= 5 ? mode : 0; // KVM marks a never-programmed channel 0xff
    ch.access = s.rw_mode >= 1 && s.rw_mode <= 3 ? s.rw_mode : 3;
    ch.bcd = s.bcd != 0;
    ch.gate = s.gate != 0;
    const uint32_t modulus = ch.bcd ? 10000 : 0x10000;
    ch.loaded = s.count != 0;
    ch.reload = ch.loaded ? std::min(s.count, modulus) : modulus;
    if (ch.reload == 1 && periodic(ch.mode))
        ch.reload = 2;
    ch.null_count = !ch.loaded;
    if (s.count_latched) {
        ch.latched_count = s.latched_count;
        ch.latched_msb_next = ch.access == 3 && (s.count_latched == kRwMsb || s.count_latched == kRwWord1);
    }
    if (s.status_latched)
        ch.latched_status = s.status;
    ch.read_msb_next = ch.access == 3 && s.read_state == kRwWord1;
    ch.write_msb_next = ch.access == 3 && s.write_state == kRwWord1;
    ch.write_lsb = s.write_latch;
    if (hardware_triggered(ch.mode) && ch.loaded) {
        // A latched status hides the null-count bit: take a high gate as having triggered.
        ch.triggered = s.status_latched ? ch.gate : !(s.status & kStatusNullCount);
    }
    ch.running = ch.loaded && (hardware_triggered(ch.mode) ? ch.triggered : ch.gate);
    const int64_t load = s.count_load_time_ns;
    if (ch.running) {
        ch.start_ns = load >= 0 ? static_cast<uint64_t>(load) : 0;
        ch.counted_ns = load >= 0 ? 0 : static_cast<uint64_t>(-load);
    } else if (ch.loaded && !hardware_triggered(ch.mode)) {
        ch.start_ns = now;
        ch.counted_ns = static_cast<int64_t>(now) > load ? static_cast<uint64_t>(static_cast<int64_t>(now) - load) : 0;
    } else {
        ch.start_ns = load >= 0 ? static_cast<uint64_t>(load) : 0;
    }
    // Every edge due by now was delivered before the save (see save()).
    if (ch.loaded && (ch.running || ch.counted_ns)) {
        const uint64_t ticks = elapsed_ticks(ch, now);
        ch.edges_done = periodic(ch.mode) ? ticks / ch.reload : (ticks >= ch.reload ? 1 : 0);
    }
}

PitState Pit::save() const
{
    std::lock_guard lock(m_mutex);
    const uint64_t now = m_clock.now_ns();
    PitState state;
    for (unsigned i = 0; i < 3; ++i)
        state.channels[i] = save_channel(m_channels[i], now);
    state.speaker_data_on = (m_speaker >> 1) & 1;
    return state;
}

void Pit::restore(const PitState& state)
{
    std::lock_guard lock(m_mutex);
    const uint64_t now = m_clock.now_ns();
    for (unsigned i = 0; i < 3; ++i)
        restore_channel(m_channels[i], state.channels[i], now);
    m_speaker = static_cast<uint8_t>((m_channels[2].gate ? kSpeakerGate2 : 0) | (state.speaker_data_on ? 2 : 0));
    publish_deadline();
}

} // namespace vessel
