#include "devices/irqchip/lapic.h"

#include <bit>
#include <cstring>

#include "base/log.h"
#include "base/log_limit.h"

namespace vessel {

namespace {

constexpr uint32_t kIdShift = 24;
constexpr uint32_t kLdrMask = 0xff000000;
constexpr uint32_t kDfrModelMask = 0xf0000000;
constexpr uint32_t kDfrFlat = 0xf0000000;
constexpr uint32_t kSvrWritable = 0x3ff; // vector, APIC enable, focus checking disable
constexpr uint32_t kDivideWritable = 0xb;

// ICR low.
constexpr uint32_t kIcrVectorMask = 0xff;
constexpr uint32_t kIcrLogical = 1u << 11;
constexpr uint32_t kIcrLevelAssert = 1u << 14;
constexpr uint32_t kIcrTriggerLevel = 1u << 15;
constexpr unsigned kIcrShorthandShift = 18;
constexpr uint32_t kIcrWritable = 0x000ccfff; // delivery status (bit 12) always reads idle

// Writable bits of each LVT (timer, thermal, perf, LINT0, LINT1, error).
constexpr std::array<uint32_t, 6> kLvtWritable
    = { 0x000700ff, 0x000107ff, 0x000107ff, 0x0001a7ff, 0x0001a7ff, 0x000100ff };
constexpr uint32_t kLvtDeliveryMask = 7u << 8;
constexpr uint32_t kLvtModeFixed = 0u << 8;
constexpr uint32_t kLvtModeNmi = 4u << 8;
constexpr uint32_t kLvtModeExtInt = 7u << 8;
constexpr uint32_t kLvtTimerModeMask = 3u << 17;

constexpr uint64_t kApicBaseAddressMask = 0x000ffffffffff000ull;

uint32_t get32(const Lapic::RegisterPage& page, uint32_t offset)
{
    uint32_t value;
    std::memcpy(&value, page.data() + offset, 4);
    return value;
}

void put32(Lapic::RegisterPage& page, uint32_t offset, uint32_t value)
{
    std::memcpy(page.data() + offset, &value, 4);
}

} // namespace

int Lapic::Vectors::highest() const
{
    for (int i = 3; i >= 0; --i) {
        if (bits[i])
            return 64 * i + 63 - std::countl_zero(bits[i]);
    }
    return -1;
}

void Lapic::Vectors::set_word(unsigned i, uint32_t value)
{
    const unsigned shift = 32 * (i % 2);
    bits[i / 2] = (bits[i / 2] & ~(0xffffffffull << shift)) | (static_cast<uint64_t>(value) << shift);
}

Lapic::Lapic(uint32_t apic_id, VirtualClock& clock, ApicBus& bus, LapicClient& client, uint64_t bus_hz)
    : m_clock(clock)
    , m_bus(bus)
    , m_client(client)
    , m_bus_hz(bus_hz == 0 ? kBusFrequencyHz : bus_hz)
    , m_initial_id(apic_id & 0xff)
{
    reset();
}

void Lapic::reset()
{
    std::lock_guard lock(m_mutex);
    m_id = m_initial_id;
    m_apic_base = kDefaultBase | kApicBaseEnable | (m_initial_id == 0 ? kApicBaseBsp : 0);
    reset_registers();
    update_pending();
    publish_timer();
}

void Lapic::reset_registers()
{
    m_tpr = 0;
    m_ldr = 0;
    m_dfr = 0xffffffff;
    m_svr = 0xff;
    m_esr = 0;
    m_esr_pending = 0;
    m_icr_low = 0;
    m_icr_high = 0;
    m_lvt.fill(kLvtMasked);
    m_timer_initial = 0;
    m_timer_divide = 0;
    m_irr = {};
    m_isr = {};
    m_tmr = {};
    m_nmi_pending = false;
    m_extint_message = false;
    m_tsc_deadline = 0;
    disarm_timer();
}

uint32_t Lapic::apic_id() const
{
    std::lock_guard lock(m_mutex);
    return m_id;
}

bool Lapic::is_bsp() const
{
    return apic_base_msr() & kApicBaseBsp;
}

uint64_t Lapic::apic_base_msr() const
{
    std::lock_guard lock(m_mutex);
    return m_apic_base;
}

void Lapic::set_extint_handler(std::function<int()> acknowledge)
{
    std::lock_guard lock(m_mutex);
    m_extint_ack = std::move(acknowledge);
}

void Lapic::set_pc_bios_lints()
{
    std::lock_guard lock(m_mutex);
    m_lvt[LvtLint0] = kLvtModeExtInt;
    m_lvt[LvtLint1] = kLvtModeNmi;
    update_pending();
}

void Lapic::flush(const Effects& fx)
{
    if (fx.send)
        m_bus.deliver(*fx.send);
    if (fx.eoi_vector >= 0)
        m_bus.broadcast_eoi(static_cast<uint8_t>(fx.eoi_vector));
    if (fx.init)
        m_client.lapic_init();
    if (fx.sipi >= 0)
        m_client.lapic_sipi(static_cast<uint8_t>(fx.sipi));
    if (fx.kick)
        m_client.lapic_kick();
}

// --- Priorities and pending state ---

uint8_t Lapic::ppr() const
{
    const int isrv = m_isr.highest();
    const uint32_t isr_class = isrv < 0 ? 0 : static_cast<uint32_t>(isrv) & 0xf0;
    return static_cast<uint8_t>((m_tpr & 0xf0) >= isr_class ? m_tpr : isr_class);
}

uint8_t Lapic::apr() const
{
    // The P6-family definition (arbitration priority for lowest-priority delivery).
    const int isrv = m_isr.highest();
    const int irrv = m_irr.highest();
    const uint32_t isr_class = isrv < 0 ? 0 : static_cast<uint32_t>(isrv) & 0xf0;
    const uint32_t irr_class = irrv < 0 ? 0 : static_cast<uint32_t>(irrv) & 0xf0;
    if ((m_tpr & 0xf0) >= irr_class && (m_tpr & 0xf0) > isr_class)
        return static_cast<uint8_t>(m_tpr);
    return static_cast<uint8_t>(std::max({ m_tpr & 0xf0, isr_class, irr_class }));
}

bool Lapic::extint_pending() const
{
    if (m_extint_message)
        return true;
    if (!m_lint_level[0])
        return false;
    // A globally disabled APIC passes INTR straight to the core (virtual wire).
    if (!(m_apic_base & kApicBaseEnable))
        return true;
    const uint32_t lvt = m_lvt[LvtLint0];
    return !(lvt & kLvtMasked) && (lvt & kLvtDeliveryMask) == kLvtModeExtInt;
}

bool Lapic::update_pending()
{
    uint32_t flags = 0;
    if (extint_pending()) {
        flags |= kPendingInterrupt;
    } else if (m_apic_base & kApicBaseEnable) {
        const int v = m_irr.highest();
        if (v >= 0 && (static_cast<uint32_t>(v) & 0xf0) > (ppr() & 0xf0u))
            flags |= kPendingInterrupt;
    }
    if (m_nmi_pending)
        flags |= kPendingNmi;
    const uint32_t old = m_pending.exchange(flags, std::memory_order_acq_rel);
    return (flags & ~old) != 0;
}

void Lapic::error(uint32_t esr_bit)
{
    m_esr_pending |= esr_bit;
    const uint32_t lvt = m_lvt[LvtError];
    const uint8_t vector = static_cast<uint8_t>(lvt & 0xff);
    if (!(lvt & kLvtMasked) && vector >= 16)
        raise_vector(vector, false);
}

void Lapic::raise_vector(uint8_t vector, bool level)
{
    if (vector < 16) {
        error(kEsrReceiveIllegalVector);
        return;
    }
    m_irr.set(vector);
    if (level)
        m_tmr.set(vector);
    else
        m_tmr.clear(vector);
}

int Lapic::pending_vector() const
{
    std::lock_guard lock(m_mutex);
    if (!(m_apic_base & kApicBaseEnable))
        return -1;
    const int v = m_irr.highest();
    return v >= 0 && (static_cast<uint32_t>(v) & 0xf0) > (ppr() & 0xf0u) ? v : -1;
}

uint8_t Lapic::acknowledge()
{
    std::unique_lock lock(m_mutex);
    if (extint_pending()) {
        m_extint_message = false;
        update_pending();
        auto ack = m_extint_ack;
        const uint8_t spurious = static_cast<uint8_t>(m_svr);
        lock.unlock();
        // The PIC updates LINT0 (set_lint) from inside its acknowledge.
        return ack ? static_cast<uint8_t>(ack()) : spurious;
    }
    const int v = m_irr.highest();
    if (!(m_apic_base & kApicBaseEnable) || v < 0 || (static_cast<uint32_t>(v) & 0xf0) <= (ppr() & 0xf0u)) {
        update_pending();
        return static_cast<uint8_t>(m_svr); // spurious: no ISR bit
    }
    m_irr.clear(static_cast<unsigned>(v));
    m_isr.set(static_cast<unsigned>(v));
    update_pending();
    return static_cast<uint8_t>(v);
}

bool Lapic::acknowledge_nmi()
{
    std::lock_guard lock(m_mutex);
    const bool was = m_nmi_pending;
    m_nmi_pending = false;
    update_pending();
    return was;
}

void Lapic::set_nmi_pending(bool pending)
{
    Effects fx;
    {
        std::lock_guard lock(m_mutex);
        m_nmi_pending = pending;
        fx.kick = update_pending();
    }
    flush(fx);
}

void Lapic::set_tpr(uint8_t cr8)
{
    std::lock_guard lock(m_mutex);
    m_tpr = static_cast<uint32_t>(cr8 & 0xf) << 4;
    update_pending();
}

uint8_t Lapic::get_tpr() const
{
    std::lock_guard lock(m_mutex);
    return static_cast<uint8_t>((m_tpr >> 4) & 0xf);
}

uint8_t Lapic::task_priority() const
{
    std::lock_guard lock(m_mutex);
    return static_cast<uint8_t>(m_tpr);
}

bool Lapic::accepts_fixed() const
{
    std::lock_guard lock(m_mutex);
    return (m_apic_base & kApicBaseEnable) && sw_enabled();
}

void Lapic::eoi()
{
    Effects fx;
    {
        std::lock_guard lock(m_mutex);
        do_eoi(fx);
    }
    flush(fx);
}

void Lapic::do_eoi(Effects& fx)
{
    const int v = m_isr.highest();
    if (v < 0)
        return;
    m_isr.clear(static_cast<unsigned>(v));
    if (m_tmr.test(static_cast<unsigned>(v)))
        fx.eoi_vector = v;
    update_pending();
}

// --- Messages ---

bool Lapic::matches_destination(uint32_t dest, bool logical) const
{
    std::lock_guard lock(m_mutex);
    dest &= 0xff;
    if (!logical)
        return dest == ApicMessage::kBroadcast || dest == m_id;
    if (dest == ApicMessage::kBroadcast)
        return true;
    const uint32_t logical_id = m_ldr >> 24;
    if ((m_dfr & kDfrModelMask) == kDfrFlat)
        return (logical_id & dest) != 0;
    // Cluster model: cluster in bits 7:4 (15 = all clusters), member bitmap in bits 3:0.
    const bool cluster_match = (dest >> 4) == 0xf || (dest >> 4) == (logical_id >> 4);
    return cluster_match && (dest & logical_id & 0xf) != 0;
}

void Lapic::accept(const ApicMessage& message)
{
    Effects fx;
    {
        std::lock_guard lock(m_mutex);
        if (!(m_apic_base & kApicBaseEnable))
            return; // a globally disabled APIC takes no messages
        switch (message.delivery_mode) {
        case ApicDeliveryMode::Fixed:
        case ApicDeliveryMode::LowestPriority:
            if (sw_enabled())
                raise_vector(message.vector, message.trigger_level);
            break;
        case ApicDeliveryMode::Nmi: m_nmi_pending = true; break;
        case ApicDeliveryMode::Init:
            // INIT level de-assert (level clear, level-triggered) only synchronised arbitration
            // ids on old processors.
            if (message.trigger_level && !message.level)
                break;
            reset_registers();
            fx.init = true;
            break;
        case ApicDeliveryMode::StartUp: fx.sipi = message.vector; break;
        case ApicDeliveryMode::ExtInt: m_extint_message = true; break;
        case ApicDeliveryMode::Smi:
        case ApicDeliveryMode::RemoteRead:
            if (log_allowed(m_log_count))
                log_debug(
                    "lapic {}: delivery mode {} not supported; dropped", m_id, static_cast<int>(message.delivery_mode));
            break;
        }
        fx.kick = update_pending();
        publish_timer();
    }
    flush(fx);
}

void Lapic::set_lint(int pin, bool level)
{
    if (pin != 0 && pin != 1)
        return;
    Effects fx;
    {
        std::lock_guard lock(m_mutex);
        const bool rising = level && !m_lint_level[pin];
        m_lint_level[pin] = level;
        const uint32_t lvt = m_lvt[pin == 0 ? LvtLint0 : LvtLint1];
        if (!(m_apic_base & kApicBaseEnable)) {
            if (pin == 1 && rising)
                m_nmi_pending = true; // LINT1 is the NMI pin of an APIC-less core
        } else if (rising && !(lvt & kLvtMasked)) {
            // ExtINT follows the level (extint_pending()); the other modes act on the edge.
            // Level-triggered fixed LINT delivery (remote IRR) is approximated as an edge.
            switch (lvt & kLvtDeliveryMask) {
            case kLvtModeFixed: raise_vector(static_cast<uint8_t>(lvt & 0xff), false); break;
            case kLvtModeNmi: m_nmi_pending = true; break;
            default: break;
            }
        }
        fx.kick = update_pending();
    }
    flush(fx);
}

void Lapic::write_icr(uint32_t value, Effects& fx)
{
    m_icr_low = value & kIcrWritable;
    ApicMessage message;
    message.vector = static_cast<uint8_t>(value & kIcrVectorMask);
    message.delivery_mode = static_cast<ApicDeliveryMode>((value >> 8) & 7);
    message.logical = value & kIcrLogical;
    message.level = value & kIcrLevelAssert;
    message.trigger_level = value & kIcrTriggerLevel;
    message.shorthand = static_cast<ApicShorthand>((value >> kIcrShorthandShift) & 3);
    message.dest = m_icr_high >> 24;
    message.source_id = m_id;
    switch (message.delivery_mode) {
    case ApicDeliveryMode::Fixed:
    case ApicDeliveryMode::LowestPriority:
        if (message.vector < 16) {
            error(kEsrSendIllegalVector);
            update_pending();
            return;
        }
        break;
    case ApicDeliveryMode::RemoteRead: return;
    default: break;
    }
    fx.send = message;
}

// --- Registers ---

void Lapic::mmio_read(uint64_t offset, std::span<uint8_t> data)
{
    std::memset(data.data(), 0, data.size());
    const uint64_t within = offset & 0xf;
    if (offset >= 0x1000 || within + data.size() > 4)
        return;
    uint32_t value = read_register(static_cast<uint32_t>(offset & 0xff0));
    value >>= 8 * within;
    std::memcpy(data.data(), &value, data.size());
}

void Lapic::mmio_write(uint64_t offset, std::span<const uint8_t> data)
{
    if (offset >= 0x1000 || (offset & 0xf) != 0 || data.size() != 4) {
        std::lock_guard lock(m_mutex);
        if (log_allowed(m_log_count))
            log_debug(
                "lapic {}: {}-byte write at {:#x} ignored (32-bit aligned accesses only)", m_id, data.size(), offset);
        return;
    }
    uint32_t value;
    std::memcpy(&value, data.data(), 4);
    write_register(static_cast<uint32_t>(offset), value);
}

uint32_t Lapic::read_register(uint32_t offset)
{
    std::lock_guard lock(m_mutex);
    return read_locked(offset, m_clock.now_ns());
}

uint32_t Lapic::read_locked(uint32_t offset, uint64_t now) const
{
    if (offset >= kRegIsr && offset < kRegIsr + 0x80)
        return m_isr.word((offset - kRegIsr) / 16);
    if (offset >= kRegTmr && offset < kRegTmr + 0x80)
        return m_tmr.word((offset - kRegTmr) / 16);
    if (offset >= kRegIrr && offset < kRegIrr + 0x80)
        return m_irr.word((offset - kRegIrr) / 16);
    switch (offset) {
    case kRegId: return m_id << kIdShift;
    case kRegVersion: return kVersion;
    case kRegTpr: return m_tpr;
    case kRegApr: return apr();
    case kRegPpr: return ppr();
    case kRegLdr: return m_ldr;
    case kRegDfr: return m_dfr;
    case kRegSvr: return m_svr;
    case kRegEsr: return m_esr;
    case kRegIcrLow: return m_icr_low;
    case kRegIcrHigh: return m_icr_high;
    case kRegLvtTimer: return m_lvt[LvtTimer];
    case kRegLvtThermal: return m_lvt[LvtThermal];
    case kRegLvtPerf: return m_lvt[LvtPerf];
    case kRegLvtLint0: return m_lvt[LvtLint0];
    case kRegLvtLint1: return m_lvt[LvtLint1];
    case kRegLvtError: return m_lvt[LvtError];
    case kRegTimerInitial: return m_timer_initial;
    case kRegTimerCurrent: return current_count(now);
    case kRegTimerDivide: return m_timer_divide;
    default: return 0; // EOI and RRD read as zero, like reserved registers
    }
}

void Lapic::write_register(uint32_t offset, uint32_t value)
{
    Effects fx;
    {
        std::lock_guard lock(m_mutex);
        write_locked(offset, value, fx);
        update_pending();
        publish_timer();
    }
    flush(fx);
}

void Lapic::write_locked(uint32_t offset, uint32_t value, Effects& fx)
{
    switch (offset) {
    case kRegId: m_id = value >> kIdShift; break;
    case kRegTpr: m_tpr = value & 0xff; break;
    case kRegEoi: do_eoi(fx); break;
    case kRegLdr: m_ldr = value & kLdrMask; break;
    case kRegDfr: m_dfr = (value & kDfrModelMask) | ~kDfrModelMask; break;
    case kRegSvr:
        m_svr = value & kSvrWritable;
        if (!sw_enabled()) {
            for (auto& lvt : m_lvt)
                lvt |= kLvtMasked;
        }
        break;
    case kRegEsr:
        // Write-before-read: a write latches the errors seen since the previous write.
        m_esr = m_esr_pending;
        m_esr_pending = 0;
        break;
    case kRegIcrLow: write_icr(value, fx); break;
    case kRegIcrHigh: m_icr_high = value & 0xff000000; break;
    case kRegLvtTimer: write_lvt(LvtTimer, value); break;
    case kRegLvtThermal: write_lvt(LvtThermal, value); break;
    case kRegLvtPerf: write_lvt(LvtPerf, value); break;
    case kRegLvtLint0: write_lvt(LvtLint0, value); break;
    case kRegLvtLint1: write_lvt(LvtLint1, value); break;
    case kRegLvtError: write_lvt(LvtError, value); break;
    case kRegTimerInitial:
        if (timer_mode() == kLvtTimerTscDeadline)
            break; // ignored in TSC-deadline mode
        m_timer_initial = value;
        if (value == 0)
            disarm_timer();
        else
            arm_countdown(m_clock.now_ns(), value);
        break;
    case kRegTimerDivide: {
        const uint64_t now = m_clock.now_ns();
        const uint32_t count = current_count(now);
        const bool counting = m_counting;
        m_timer_divide = value & kDivideWritable;
        // The countdown continues from where it is, at the new rate.
        if (counting)
            arm_countdown(now, count);
        break;
    }
    default:
        if (log_allowed(m_log_count))
            log_debug("lapic {}: write {:#x} to read-only or reserved register {:#x} ignored", m_id, value, offset);
        break;
    }
}

void Lapic::write_lvt(Lvt lvt, uint32_t value)
{
    value &= kLvtWritable[lvt];
    if (!sw_enabled())
        value |= kLvtMasked;
    if (lvt == LvtTimer && (value & kLvtTimerModeMask) != timer_mode()) {
        // Changing the timer mode disarms the timer.
        m_timer_initial = 0;
        m_tsc_deadline = 0;
        disarm_timer();
    }
    m_lvt[lvt] = value;
}

bool Lapic::read_msr(uint32_t index, uint64_t& value) const
{
    std::lock_guard lock(m_mutex);
    switch (index) {
    case kMsrApicBase: value = m_apic_base; return true;
    case kMsrTscDeadline: value = timer_mode() == kLvtTimerTscDeadline ? m_tsc_deadline : 0; return true;
    default: return false;
    }
}

bool Lapic::write_msr(uint32_t index, uint64_t value)
{
    Effects fx;
    {
        std::lock_guard lock(m_mutex);
        if (index == kMsrApicBase) {
            if (value & ~(kApicBaseAddressMask | kApicBaseBsp | kApicBaseEnable))
                return false; // reserved bits, or x2APIC mode which is not offered
            const bool was_enabled = m_apic_base & kApicBaseEnable;
            m_apic_base = value;
            if (was_enabled && !(value & kApicBaseEnable))
                reset_registers(); // the APIC state is lost while globally disabled
        } else if (index == kMsrTscDeadline) {
            if (timer_mode() != kLvtTimerTscDeadline)
                return true; // ignored outside TSC-deadline mode
            m_tsc_deadline = value;
        } else {
            return false;
        }
        fx.kick = update_pending();
        publish_timer();
    }
    flush(fx);
    return true;
}

void Lapic::set_tsc_offset(int64_t offset)
{
    std::lock_guard lock(m_mutex);
    m_tsc_offset = offset;
    publish_timer();
}

// --- Timer ---

uint64_t Lapic::divisor() const
{
    const uint32_t code = (m_timer_divide & 3) | ((m_timer_divide & 8) >> 1);
    return code == 7 ? 1 : 2ull << code;
}

uint64_t Lapic::ticks_to_ns(uint64_t ticks) const
{
    const unsigned __int128 ns = static_cast<unsigned __int128>(ticks) * divisor() * 1'000'000'000 / m_bus_hz;
    return ns > UINT64_MAX / 2 ? UINT64_MAX / 2 : static_cast<uint64_t>(ns);
}

uint64_t Lapic::ns_to_ticks(uint64_t ns) const
{
    return static_cast<uint64_t>(static_cast<unsigned __int128>(ns) * m_bus_hz / (divisor() * 1'000'000'000));
}

uint32_t Lapic::current_count(uint64_t now) const
{
    if (!m_counting || timer_mode() == kLvtTimerTscDeadline)
        return 0;
    const int64_t since = static_cast<int64_t>(now) - m_timer_start_ns;
    const uint64_t elapsed = since > 0 ? static_cast<uint64_t>(since) : 0;
    if (timer_mode() == kLvtTimerPeriodic) {
        const uint64_t ticks = ns_to_ticks(elapsed % m_timer_period_ns);
        return ticks >= m_timer_initial ? 1 : static_cast<uint32_t>(m_timer_initial - ticks);
    }
    const uint64_t ticks = ns_to_ticks(elapsed);
    return ticks >= m_timer_initial ? 0 : static_cast<uint32_t>(m_timer_initial - ticks);
}

void Lapic::arm_countdown(uint64_t now, uint32_t count)
{
    if (m_timer_initial == 0 || count == 0) {
        disarm_timer();
        return;
    }
    if (count > m_timer_initial)
        count = m_timer_initial;
    m_timer_period_ns = std::max<uint64_t>(ticks_to_ns(m_timer_initial), 1);
    const uint64_t done = std::min(ticks_to_ns(m_timer_initial - count), m_timer_period_ns - 1);
    m_timer_start_ns = static_cast<int64_t>(now) - static_cast<int64_t>(done);
    m_timer_next_ns = now + (m_timer_period_ns - done);
    m_counting = true;
}

void Lapic::disarm_timer()
{
    m_counting = false;
    m_timer_next_ns = UINT64_MAX;
}

uint64_t Lapic::tsc_deadline_ns() const
{
    if (m_tsc_deadline == 0)
        return UINT64_MAX;
    const __int128 raw = static_cast<__int128>(m_tsc_deadline) - m_tsc_offset;
    if (raw <= 0)
        return 0;
    return m_clock.ns_from_tsc(raw > static_cast<__int128>(UINT64_MAX) ? UINT64_MAX : static_cast<uint64_t>(raw));
}

void Lapic::publish_timer()
{
    const uint64_t deadline = timer_mode() == kLvtTimerTscDeadline ? tsc_deadline_ns() : m_timer_next_ns;
    m_timer_deadline.store(deadline, std::memory_order_release);
}

void Lapic::fire_timer()
{
    const uint32_t lvt = m_lvt[LvtTimer];
    if (!(lvt & kLvtMasked))
        raise_vector(static_cast<uint8_t>(lvt & 0xff), false);
}

void Lapic::run_timers(uint64_t now_ns)
{
    if (now_ns < m_timer_deadline.load(std::memory_order_acquire))
        return;
    Effects fx;
    {
        std::lock_guard lock(m_mutex);
        if (timer_mode() == kLvtTimerTscDeadline) {
            if (m_tsc_deadline != 0 && now_ns >= tsc_deadline_ns()) {
                m_tsc_deadline = 0; // the MSR reads zero once the deadline has passed
                fire_timer();
            }
        } else if (m_counting && now_ns >= m_timer_next_ns) {
            fire_timer();
            if (timer_mode() == kLvtTimerPeriodic) {
                // One interrupt for however many periods passed (IRR holds one anyway).
                const uint64_t since = static_cast<uint64_t>(static_cast<int64_t>(now_ns) - m_timer_start_ns);
                const uint64_t periods = since / m_timer_period_ns + 1;
                m_timer_next_ns
                    = static_cast<uint64_t>(m_timer_start_ns + static_cast<int64_t>(periods * m_timer_period_ns));
            } else {
                disarm_timer();
            }
        }
        fx.kick = update_pending();
        publish_timer();
    }
    flush(fx);
}

// --- State ---

void Lapic::save_regs(RegisterPage& page) const
{
    page.fill(0);
    std::lock_guard lock(m_mutex);
    const uint64_t now = m_clock.now_ns();
    static constexpr uint32_t kSaved[] = { kRegId, kRegVersion, kRegTpr, kRegApr, kRegPpr, kRegLdr, kRegDfr, kRegSvr,
        kRegEsr, kRegIcrLow, kRegIcrHigh, kRegLvtTimer, kRegLvtThermal, kRegLvtPerf, kRegLvtLint0, kRegLvtLint1,
        kRegLvtError, kRegTimerInitial, kRegTimerCurrent, kRegTimerDivide };
    for (uint32_t offset : kSaved)
        put32(page, offset, read_locked(offset, now));
    for (unsigned i = 0; i < 8; ++i) {
        put32(page, kRegIsr + 16 * i, m_isr.word(i));
        put32(page, kRegTmr + 16 * i, m_tmr.word(i));
        put32(page, kRegIrr + 16 * i, m_irr.word(i));
    }
}

void Lapic::restore_regs(const RegisterPage& page)
{
    Effects fx;
    {
        std::lock_guard lock(m_mutex);
        m_id = get32(page, kRegId) >> kIdShift;
        m_tpr = get32(page, kRegTpr) & 0xff;
        m_ldr = get32(page, kRegLdr) & kLdrMask;
        m_dfr = (get32(page, kRegDfr) & kDfrModelMask) | ~kDfrModelMask;
        m_svr = get32(page, kRegSvr) & kSvrWritable;
        m_esr = get32(page, kRegEsr);
        m_esr_pending = 0;
        m_icr_low = get32(page, kRegIcrLow) & kIcrWritable;
        m_icr_high = get32(page, kRegIcrHigh) & 0xff000000;
        const uint32_t offsets[kLvtCount]
            = { kRegLvtTimer, kRegLvtThermal, kRegLvtPerf, kRegLvtLint0, kRegLvtLint1, kRegLvtError };
        for (int i = 0; i < kLvtCount; ++i)
            m_lvt[i] = get32(page, offsets[i]) & kLvtWritable[i];
        for (unsigned i = 0; i < 8; ++i) {
            m_isr.set_word(i, get32(page, kRegIsr + 16 * i));
            m_tmr.set_word(i, get32(page, kRegTmr + 16 * i));
            m_irr.set_word(i, get32(page, kRegIrr + 16 * i));
        }
        m_nmi_pending = false;
        m_extint_message = false;
        m_timer_divide = get32(page, kRegTimerDivide) & kDivideWritable;
        m_timer_initial = get32(page, kRegTimerInitial);
        m_tsc_deadline = 0;
        disarm_timer();
        if (timer_mode() != kLvtTimerTscDeadline && m_timer_initial != 0) {
            // A one-shot count of zero has expired; a periodic one is about to reload.
            uint32_t count = get32(page, kRegTimerCurrent);
            if (count == 0 && timer_mode() == kLvtTimerPeriodic)
                count = m_timer_initial;
            arm_countdown(m_clock.now_ns(), count);
        }
        fx.kick = update_pending();
        publish_timer();
    }
    flush(fx);
}

} // namespace vessel
