#include "devices/rtc.h"

#include <algorithm>
#include <limits>

#include "base/log.h"

#include "base/log_limit.h"

#include "arch/x86/layout.h"

namespace vessel {

namespace {

constexpr int64_t kNsPerSecond = 1'000'000'000;
constexpr int64_t kSecondsPerDay = 86'400;

constexpr uint8_t kIndexMask = 0x7f;
constexpr uint8_t kNmiDisable = 0x80;

// Register A.
constexpr uint8_t kRegAUpdateInProgress = 0x80;
constexpr uint8_t kRegADividerMask = 0x70;
constexpr uint8_t kRegADivider32k = 0x20; // normal operation with a 32.768 kHz crystal
constexpr uint8_t kRegARateMask = 0x0f;
constexpr int64_t kUpdateWarningNs = 244'000; // UIP is set this long before each update

// Register B.
constexpr uint8_t kRegBSet = 0x80;
constexpr uint8_t kRegBUpdateInt = 0x10;
constexpr uint8_t kRegBBinary = 0x04;
constexpr uint8_t kRegB24Hour = 0x02;
constexpr uint8_t kRegBInterruptEnables = 0x70; // PIE, AIE, UIE

// Register C (flag bits line up with register B's enables).
constexpr uint8_t kRegCIrq = 0x80;
constexpr uint8_t kRegCPeriodic = 0x40;
constexpr uint8_t kRegCAlarm = 0x20;
constexpr uint8_t kRegCUpdate = 0x10;

// Register D.
constexpr uint8_t kRegDValid = 0x80;

constexpr uint8_t kHourPm = 0x80;
constexpr uint8_t kAlarmDontCare = 0xc0;

// Power-on values.
constexpr uint8_t kResetRegA = 0x26; // 32.768 kHz divider, 1024 Hz periodic rate
constexpr uint8_t kResetRegB = kRegB24Hour; // BCD, 24-hour

// The range of times the guest can set (keeps nanosecond arithmetic far from overflow).
constexpr int64_t kMinYear = 1900;
constexpr int64_t kMaxYear = 2199;

// Time registers in the order they are decoded when SET is cleared.
constexpr uint8_t kTimeRegisters[] = {
    Rtc::kSeconds, Rtc::kMinutes, Rtc::kHours, Rtc::kDayOfWeek, Rtc::kDayOfMonth, Rtc::kMonth, Rtc::kYear, Rtc::kCentury,
};

int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0)))
        --q;
    return q;
}

int64_t floor_mod(int64_t a, int64_t b)
{
    return a - floor_div(a, b) * b;
}

int64_t saturating_add(int64_t a, int64_t b)
{
    int64_t result = 0;
    if (__builtin_add_overflow(a, b, &result))
        return b > 0 ? std::numeric_limits<int64_t>::max() : std::numeric_limits<int64_t>::min();
    return result;
}

int64_t saturating_sub(int64_t a, int64_t b)
{
    int64_t result = 0;
    if (__builtin_sub_overflow(a, b, &result))
        return b < 0 ? std::numeric_limits<int64_t>::max() : std::numeric_limits<int64_t>::min();
    return result;
}

uint8_t to_bcd(int64_t value)
{
    const auto v = static_cast<uint8_t>(floor_mod(value, 100));
    return static_cast<uint8_t>(((v / 10) << 4) | (v % 10));
}

// Ticks of the 32.768 kHz time base since the epoch (floor).
int64_t ticks_32k(int64_t ns)
{
    return floor_div(ns, kNsPerSecond) * 32768 + floor_mod(ns, kNsPerSecond) * 32768 / kNsPerSecond;
}


} // namespace

Rtc::Rtc(uint64_t ram_size, Clock clock)
    : m_clock(std::move(clock))
{
    if (!m_clock)
        m_clock = [] { return std::chrono::system_clock::now(); };

    m_cmos[kRegA] = kResetRegA;
    m_cmos[kRegB] = kResetRegB;
    m_cmos[kRegD] = kRegDValid;

    // Memory-size bytes, as a PC BIOS leaves them.
    const uint64_t below_4g = std::min(ram_size, layout::kMmioHoleStart);
    const uint64_t above_4g = ram_size - below_4g;
    const auto put16 = [this](uint8_t low, uint64_t value) {
        m_cmos[low] = static_cast<uint8_t>(value);
        m_cmos[low + 1] = static_cast<uint8_t>(value >> 8);
    };
    put16(0x15, layout::kLowRamEnd / layout::KiB); // base memory in KiB (640)
    const uint64_t extended_kib = below_4g > layout::MiB ? (below_4g - layout::MiB) / layout::KiB : 0;
    put16(0x17, std::min<uint64_t>(extended_kib, 0xfc00)); // RAM from 1 MiB (KiB, max 63 MiB)
    put16(0x30, std::min<uint64_t>(extended_kib, 0xfc00));
    const uint64_t above_16m = below_4g > 16 * layout::MiB ? (below_4g - 16 * layout::MiB) / (64 * layout::KiB) : 0;
    put16(0x34, std::min<uint64_t>(above_16m, 0xffff)); // RAM from 16 MiB to 4 GiB (64 KiB units)
    const uint64_t high_units = std::min<uint64_t>(above_4g / (64 * layout::KiB), 0xffffff);
    m_cmos[0x5b] = static_cast<uint8_t>(high_units); // RAM above 4 GiB (64 KiB units)
    m_cmos[0x5c] = static_cast<uint8_t>(high_units >> 8);
    m_cmos[0x5d] = static_cast<uint8_t>(high_units >> 16);

    m_flags_checked_ns = guest_now_ns();
}

int64_t Rtc::guest_now_ns() const
{
    const auto now = std::chrono::duration_cast<std::chrono::nanoseconds>(m_clock().time_since_epoch());
    return saturating_add(now.count(), m_offset_ns);
}

void Rtc::read(uint64_t offset, std::span<uint8_t> data)
{
    std::lock_guard lock(m_mutex);
    for (size_t i = 0; i < data.size(); ++i)
        data[i] = offset + i == kDataOffset ? read_register(m_index) : 0xff; // the index port is write-only
}

void Rtc::write(uint64_t offset, std::span<const uint8_t> data)
{
    std::lock_guard lock(m_mutex);
    for (size_t i = 0; i < data.size(); ++i) {
        if (offset + i == kIndexOffset) {
            m_index = data[i] & kIndexMask;
            m_nmi_disabled = data[i] & kNmiDisable;
        } else if (offset + i == kDataOffset) {
            write_register(m_index, data[i]);
        }
    }
}

bool Rtc::time_register(uint8_t index) const
{
    return std::find(std::begin(kTimeRegisters), std::end(kTimeRegisters), index) != std::end(kTimeRegisters);
}

bool Rtc::divider_running() const
{
    return (m_cmos[kRegA] & kRegADividerMask) == kRegADivider32k;
}

uint8_t Rtc::read_register(uint8_t index)
{
    if (time_register(index)) {
        if (m_cmos[kRegB] & kRegBSet)
            return m_cmos[index];
        return encode_field(index, to_civil(floor_div(guest_now_ns(), kNsPerSecond)), m_cmos[kRegB]);
    }
    switch (index) {
    case kRegA: {
        uint8_t value = m_cmos[kRegA] & static_cast<uint8_t>(~kRegAUpdateInProgress);
        const bool updating = !(m_cmos[kRegB] & kRegBSet) && divider_running()
            && floor_mod(guest_now_ns(), kNsPerSecond) >= kNsPerSecond - kUpdateWarningNs;
        if (updating)
            value |= kRegAUpdateInProgress;
        return value;
    }
    case kRegC: {
        update_flags(guest_now_ns());
        const uint8_t value = m_cmos[kRegC];
        m_cmos[kRegC] = 0; // reading register C clears it
        return value;
    }
    case kRegD:
        return kRegDValid;
    default:
        return m_cmos[index];
    }
}

void Rtc::write_register(uint8_t index, uint8_t value)
{
    if (time_register(index)) {
        if (m_cmos[kRegB] & kRegBSet) {
            m_cmos[index] = value; // frozen; takes effect when SET is cleared
            return;
        }
        if (index == kDayOfWeek) {
            log_oddity("day-of-week write ignored (derived from the date)", index, value);
            return;
        }
        // The counting registers change at once; the clock runs on from the new value.
        const int64_t now = guest_now_ns();
        update_flags(now);
        CivilTime time = to_civil(floor_div(now, kNsPerSecond));
        decode_field(index, value, m_cmos[kRegB], time);
        const int64_t target = from_civil(time) * kNsPerSecond + floor_mod(now, kNsPerSecond);
        m_offset_ns = saturating_add(m_offset_ns, saturating_sub(target, now));
        m_flags_checked_ns = target;
        return;
    }
    switch (index) {
    case kRegA:
        update_flags(guest_now_ns());
        m_cmos[kRegA] = value & static_cast<uint8_t>(~kRegAUpdateInProgress);
        break;
    case kRegB:
        write_reg_b(value);
        break;
    case kRegC:
    case kRegD:
        log_oddity("write to read-only register", index, value);
        break;
    default:
        m_cmos[index] = value;
        break;
    }
}

void Rtc::write_reg_b(uint8_t value)
{
    const int64_t now = guest_now_ns();
    update_flags(now);
    const uint8_t old = m_cmos[kRegB];
    if (value & kRegBSet)
        value &= static_cast<uint8_t>(~kRegBUpdateInt); // setting SET clears UIE
    if (!(old & kRegBSet) && (value & kRegBSet)) {
        // Freeze the time registers, in the data format being selected.
        const CivilTime time = to_civil(floor_div(now, kNsPerSecond));
        for (uint8_t reg : kTimeRegisters)
            m_cmos[reg] = encode_field(reg, time, value);
    } else if ((old & kRegBSet) && !(value & kRegBSet)) {
        // The clock starts from the registers the guest wrote, at the start of that second.
        CivilTime time;
        for (uint8_t reg : kTimeRegisters) {
            if (reg != kDayOfWeek)
                decode_field(reg, m_cmos[reg], value, time);
        }
        const int64_t target = from_civil(time) * kNsPerSecond;
        m_offset_ns = saturating_add(m_offset_ns, saturating_sub(target, now));
        m_flags_checked_ns = target;
    }
    m_cmos[kRegB] = value;
}

uint8_t Rtc::encode_field(uint8_t index, const CivilTime& time, uint8_t reg_b)
{
    const auto encode = [reg_b](int64_t value) -> uint8_t {
        if (reg_b & kRegBBinary)
            return static_cast<uint8_t>(floor_mod(value, 100));
        return to_bcd(value);
    };
    switch (index) {
    case kSeconds:
        return encode(time.second);
    case kMinutes:
        return encode(time.minute);
    case kHours: {
        if (reg_b & kRegB24Hour)
            return encode(time.hour);
        const int64_t hour12 = time.hour % 12 == 0 ? 12 : time.hour % 12;
        return static_cast<uint8_t>(encode(hour12) | (time.hour >= 12 ? kHourPm : 0));
    }
    case kDayOfWeek:
        return encode(time.weekday);
    case kDayOfMonth:
        return encode(time.day);
    case kMonth:
        return encode(time.month);
    case kYear:
        return encode(floor_mod(time.year, 100));
    case kCentury:
        return encode(floor_div(time.year, 100));
    default:
        return 0;
    }
}

void Rtc::decode_field(uint8_t index, uint8_t value, uint8_t reg_b, CivilTime& time)
{
    const auto decode = [reg_b](uint8_t raw) -> int64_t {
        if (reg_b & kRegBBinary)
            return raw;
        return (raw >> 4) * 10 + (raw & 0x0f);
    };
    switch (index) {
    case kSeconds:
        time.second = decode(value);
        break;
    case kMinutes:
        time.minute = decode(value);
        break;
    case kHours:
        if (reg_b & kRegB24Hour)
            time.hour = decode(value);
        else
            time.hour = decode(value & static_cast<uint8_t>(~kHourPm)) % 12 + ((value & kHourPm) ? 12 : 0);
        break;
    case kDayOfMonth:
        time.day = decode(value);
        break;
    case kMonth:
        time.month = decode(value);
        break;
    case kYear:
        time.year = floor_div(time.year, 100) * 100 + decode(value);
        break;
    case kCentury:
        time.year = decode(value) * 100 + floor_mod(time.year, 100);
        break;
    default:
        break;
    }
}

Rtc::CivilTime Rtc::to_civil(int64_t seconds)
{
    using namespace std::chrono;
    const int64_t day_number = floor_div(seconds, kSecondsPerDay);
    const int64_t second_of_day = floor_mod(seconds, kSecondsPerDay);
    const sys_days days_point { days { day_number } };
    const year_month_day date { days_point };
    CivilTime time;
    time.year = static_cast<int>(date.year());
    time.month = static_cast<unsigned>(date.month());
    time.day = static_cast<unsigned>(date.day());
    time.hour = second_of_day / 3600;
    time.minute = second_of_day / 60 % 60;
    time.second = second_of_day % 60;
    time.weekday = weekday { days_point }.c_encoding() + 1;
    return time;
}

int64_t Rtc::from_civil(const CivilTime& time)
{
    using namespace std::chrono;
    // Out-of-range fields (a guest can write anything) carry arithmetically: month 13 is
    // January of the next year, day 32 the first of the next month, and so on. Every field
    // but the year comes from one register byte, so only the year needs bounding.
    const int64_t month0 = time.month - 1;
    const int64_t year_number = std::clamp<int64_t>(time.year + floor_div(month0, 12), kMinYear, kMaxYear);
    const year_month_day first { year { static_cast<int>(year_number) },
                                 month { static_cast<unsigned>(floor_mod(month0, 12) + 1) }, day { 1 } };
    const int64_t day_number = sys_days { first }.time_since_epoch().count() + time.day - 1;
    return day_number * kSecondsPerDay + time.hour * 3600 + time.minute * 60 + time.second;
}

void Rtc::update_flags(int64_t guest_ns)
{
    const int64_t previous = m_flags_checked_ns;
    m_flags_checked_ns = guest_ns;
    if ((m_cmos[kRegB] & kRegBSet) || !divider_running() || guest_ns <= previous)
        return;

    uint8_t flags = 0;
    const int64_t previous_second = floor_div(previous, kNsPerSecond);
    const int64_t second = floor_div(guest_ns, kNsPerSecond);
    if (second != previous_second) {
        flags |= kRegCUpdate;
        // Did any update since the last check land on the alarm time? A day covers them all.
        const uint8_t reg_b = m_cmos[kRegB];
        const auto matches = [](uint8_t alarm, uint8_t value) {
            return (alarm & kAlarmDontCare) == kAlarmDontCare || alarm == value;
        };
        for (int64_t s = std::max(previous_second + 1, second - kSecondsPerDay + 1); s <= second; ++s) {
            CivilTime time;
            const int64_t second_of_day = floor_mod(s, kSecondsPerDay);
            time.hour = second_of_day / 3600;
            time.minute = second_of_day / 60 % 60;
            time.second = second_of_day % 60;
            if (matches(m_cmos[kSecondsAlarm], encode_field(kSeconds, time, reg_b))
                && matches(m_cmos[kMinutesAlarm], encode_field(kMinutes, time, reg_b))
                && matches(m_cmos[kHoursAlarm], encode_field(kHours, time, reg_b))) {
                flags |= kRegCAlarm;
                break;
            }
        }
    }

    // Periodic flag: rate select 1 and 2 give 256 and 128 Hz, n ≥ 3 gives 65536 >> n Hz.
    const uint8_t rate = m_cmos[kRegA] & kRegARateMask;
    if (rate != 0) {
        const int64_t period = rate == 1 ? 128 : rate == 2 ? 256 : int64_t { 1 } << (rate - 1);
        if (floor_div(ticks_32k(guest_ns), period) != floor_div(ticks_32k(previous), period))
            flags |= kRegCPeriodic;
    }

    m_cmos[kRegC] |= flags;
    if (m_cmos[kRegC] & m_cmos[kRegB] & kRegBInterruptEnables)
        m_cmos[kRegC] |= kRegCIrq;
}

void Rtc::log_oddity(const char* what, uint8_t index, uint8_t value)
{
    if (log_allowed(m_log_count))
        log_debug("rtc: {} (register {:#04x}, value {:#04x})", what, index, value);
}

Rtc::State Rtc::save() const
{
    std::lock_guard lock(m_mutex);
    State state;
    state.cmos = m_cmos;
    state.index = m_index;
    state.nmi_disabled = m_nmi_disabled;
    state.offset_ns = m_offset_ns;
    state.flags_checked_ns = m_flags_checked_ns;
    return state;
}

void Rtc::restore(const State& state)
{
    std::lock_guard lock(m_mutex);
    m_cmos = state.cmos;
    m_index = state.index & kIndexMask;
    m_nmi_disabled = state.nmi_disabled;
    m_offset_ns = state.offset_ns;
    m_flags_checked_ns = state.flags_checked_ns;
}

} // namespace vessel
