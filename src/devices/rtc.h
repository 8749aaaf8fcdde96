// The MC146818 CMOS real-time clock (layout::kRtcPort): offset 0 is the index port (bit 7 is the
// NMI-disable bit, stored but inert; reads return 0xff), offset 1 the data port into 128 bytes
// of CMOS.
//
// The clock is the injected clock source (UTC) plus an offset the guest moves by setting the
// time: while register B's SET bit is set the time registers are frozen (a snapshot taken when
// SET was raised) and take the guest's writes; clearing SET starts the clock from them. A time
// register written while SET is clear takes effect at once. The day of week is derived from the
// date; the century lives in register 0x32 (point the FADT's CENTURY field there). Times the
// guest sets are bounded to the years 1900-2199.
//
// Register A's UIP bit is modelled: it reads 1 during the last 244 µs of each second (the
// datasheet's warning time before an update), so guests that poll for the update edge make
// progress, and "UIP clear ⇒ at least 244 µs before the registers change" holds.
//
// Interrupts are not implemented: there is no IRQ 8. The enable bits (PIE, AIE, UIE) are stored
// but inert; the flags in register C (UF, AF, PF and IRQF) are computed lazily when register C is
// read, from the time elapsed since it was last read, so polling guests still see them.
// Register A's divider bits are stored; the clock keeps running whatever they say (only UIP and
// the flags stop when the divider is not in its normal 32.768 kHz setting).
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>

#include "bus/bus.h"

namespace vessel {

class Rtc final : public BusDevice {
public:
    using Clock = std::function<std::chrono::system_clock::time_point()>;

    static constexpr uint64_t kIndexOffset = 0;
    static constexpr uint64_t kDataOffset = 1;
    static constexpr size_t kCmosSize = 128;

    // CMOS registers.
    static constexpr uint8_t kSeconds = 0x00;
    static constexpr uint8_t kSecondsAlarm = 0x01;
    static constexpr uint8_t kMinutes = 0x02;
    static constexpr uint8_t kMinutesAlarm = 0x03;
    static constexpr uint8_t kHours = 0x04;
    static constexpr uint8_t kHoursAlarm = 0x05;
    static constexpr uint8_t kDayOfWeek = 0x06;
    static constexpr uint8_t kDayOfMonth = 0x07;
    static constexpr uint8_t kMonth = 0x08;
    static constexpr uint8_t kYear = 0x09;
    static constexpr uint8_t kRegA = 0x0a;
    static constexpr uint8_t kRegB = 0x0b;
    static constexpr uint8_t kRegC = 0x0c;
    static constexpr uint8_t kRegD = 0x0d;
    static constexpr uint8_t kCentury = 0x32;

    struct State {
        std::array<uint8_t, kCmosSize> cmos {}; // time registers are meaningful only while SET
        uint8_t index { 0 };
        bool nmi_disabled { false };
        int64_t offset_ns { 0 };       // guest time minus clock-source time
        int64_t flags_checked_ns { 0 }; // guest time up to which register C's flags are current

        bool operator==(const State&) const = default;
    };

    // `ram_size` (bytes of guest RAM, laid out around the 32-bit MMIO hole like GuestMemory)
    // fills the CMOS memory-size bytes. `clock` defaults to std::chrono::system_clock::now.
    explicit Rtc(uint64_t ram_size, Clock clock = {});

    std::string_view name() const override { return "rtc"; }
    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

    State save() const;
    void restore(const State& state);

private:
    struct CivilTime {
        int64_t year { 1970 };
        int64_t month { 1 };  // 1-12
        int64_t day { 1 };    // 1-31
        int64_t hour { 0 };
        int64_t minute { 0 };
        int64_t second { 0 };
        int64_t weekday { 5 }; // 1 = Sunday
    };

    int64_t guest_now_ns() const;
    uint8_t read_register(uint8_t index);
    void write_register(uint8_t index, uint8_t value);
    void write_reg_b(uint8_t value);
    bool time_register(uint8_t index) const;
    // Time register value of `time` in the data format of register B value `reg_b`.
    static uint8_t encode_field(uint8_t index, const CivilTime& time, uint8_t reg_b);
    static void decode_field(uint8_t index, uint8_t value, uint8_t reg_b, CivilTime& time);
    static CivilTime to_civil(int64_t seconds);
    static int64_t from_civil(const CivilTime& time);
    // Folds updates / periodic ticks / alarms up to `guest_ns` into register C.
    void update_flags(int64_t guest_ns);
    bool divider_running() const;
    void log_oddity(const char* what, uint8_t index, uint8_t value);

    Clock m_clock;

    mutable std::mutex m_mutex;
    std::array<uint8_t, kCmosSize> m_cmos {};
    uint8_t m_index { 0 };
    bool m_nmi_disabled { false };
    int64_t m_offset_ns { 0 };
    int64_t m_flags_checked_ns { 0 };
    uint64_t m_log_count { 0 };
};

} // namespace vessel
