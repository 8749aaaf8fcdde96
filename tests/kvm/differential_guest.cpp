#include "differential_guest.h"

#include <chrono>
#include <cstring>

namespace vessel::difftest {

namespace {

constexpr auto kTimeout = std::chrono::seconds(5);

constexpr uint64_t gdt_entry(uint32_t base, uint32_t limit, uint8_t access, uint8_t flags)
{
    return (limit & 0xffffULL) | ((base & 0xffffffULL) << 16) | (static_cast<uint64_t>(access) << 40)
        | (static_cast<uint64_t>((limit >> 16) & 0xf) << 48) | (static_cast<uint64_t>(flags & 0xf) << 52)
        | (static_cast<uint64_t>(base >> 24) << 56);
}

SegmentReg segment(uint16_t selector, uint8_t type, uint8_t dpl, uint8_t db, uint8_t l)
{
    SegmentReg s;
    s.base = 0;
    s.limit = 0xffffffff;
    s.selector = selector;
    s.type = type;
    s.present = 1;
    s.dpl = dpl;
    s.db = db;
    s.s = 1;
    s.l = l;
    s.g = 1;
    return s;
}

} // namespace

bool pushes_error_code(int vector) { return vector == 8 || (vector >= 10 && vector <= 14) || vector == 17; }

Result<void> write_static_image(GuestMemory& memory)
{
    TRY(memory.fill(0, 0, kCodeBase));
    // Paging: PML4[0] → PDPT[0] → PD of 512 2-MiB pages, all present, writable, user.
    TRY(memory.write_obj<uint64_t>(kPml4, kPdpt | 0x7));
    TRY(memory.write_obj<uint64_t>(kPdpt, kPd | 0x7));
    for (uint64_t i = 0; i < 512; ++i)
        TRY(memory.write_obj<uint64_t>(kPd + i * 8, (i << 21) | 0x87));
    // The window's 2 MiB in 4 KiB pages, so that the pages after it can fault.
    TRY(memory.write_obj<uint64_t>(kPd + 8, kPt | 0x7));
    for (uint64_t i = 0; i < 512; ++i) {
        uint64_t page = 0x200000 + (i << 12);
        uint64_t flags = page == kNotPresentPage ? 0 : page == kReadOnlyPage ? 0x5 : page == kSupervisorPage ? 0x3 : 0x7;
        TRY(memory.write_obj<uint64_t>(kPt + i * 8, flags ? (page | flags) : 0));
    }

    const uint64_t gdt[] = {
        0,
        gdt_entry(0, 0xfffff, 0x9b, 0xa), // 0x08 kernel code, 64-bit
        gdt_entry(0, 0xfffff, 0x93, 0xc), // 0x10 kernel data
        gdt_entry(0, 0xfffff, 0xf3, 0xc), // 0x18 user data (0x1b)
        gdt_entry(0, 0xfffff, 0xfb, 0xa), // 0x20 user code, 64-bit (0x23)
        gdt_entry(kTss, kTssLimit, 0x89, 0x0), // 0x28 64-bit TSS (available), low half
        kTss >> 32,                            //      high half
    };
    for (size_t i = 0; i < std::size(gdt); ++i)
        TRY(memory.write_obj<uint64_t>(kGdt + i * 8, gdt[i]));

    // TSS: RSP0 for the fault stubs, the I/O bitmap right after the 0x68-byte TSS. Only the
    // done port is open to CPL3.
    TRY(memory.write_obj<uint64_t>(kTss + 4, kKernelStackTop));
    TRY(memory.write_obj<uint16_t>(kTss + 0x66, 0x68));
    TRY(memory.fill(kTss + 0x68, 0xff, 8192 + 1));
    uint8_t bits = static_cast<uint8_t>(~(1u << (kDonePort & 7)));
    TRY(memory.write_obj<uint8_t>(kTss + 0x68 + kDonePort / 8, bits));

    // IDT: every vector → a CPL0 stub `mov al, vector; out kFaultPort, al; jmp $`.
    for (uint64_t v = 0; v < 256; ++v) {
        uint64_t stub = kFaultStubs + v * 8;
        const uint8_t code[] = { 0xb0, static_cast<uint8_t>(v), 0xe6, static_cast<uint8_t>(kFaultPort), 0xeb, 0xfe };
        TRY(memory.write(stub, code));
        uint64_t lo = (stub & 0xffff) | (static_cast<uint64_t>(kKernelCs) << 16) | (0x8eULL << 40)
            | (((stub >> 16) & 0xffff) << 48);
        TRY(memory.write_obj<uint64_t>(kIdt + v * 16, lo));
        TRY(memory.write_obj<uint64_t>(kIdt + v * 16 + 8, stub >> 32));
    }
    return {};
}

CaseRunner::CaseRunner(std::string name, EngineFactory factory, GuestMemory memory)
    : m_name(std::move(name))
    , m_factory(std::move(factory))
    , m_memory(std::move(memory))
    , m_slot_used(kCodeSlots, false)
{
}

CaseRunner::~CaseRunner()
{
    {
        std::lock_guard lock(m_watch_mutex);
        m_stop = true;
    }
    m_watch_cv.notify_all();
    if (m_watchdog.joinable())
        m_watchdog.join();
}

Result<std::unique_ptr<CaseRunner>> CaseRunner::create(std::string name, EngineFactory factory)
{
    auto memory = TRY(GuestMemory::create(kGuestMemBytes));
    TRY(write_static_image(memory));
    std::unique_ptr<CaseRunner> runner(new CaseRunner(std::move(name), std::move(factory), std::move(memory)));
    TRY(runner->build_engine());
    runner->m_watchdog = std::thread([r = runner.get()] { r->watchdog(); });
    return runner;
}

Result<void> CaseRunner::build_engine()
{
    m_vcpu.reset();
    m_engine.reset();
    m_engine = TRY(m_factory());
    TRY(m_engine->map_memory(m_memory));
    m_vcpu = TRY(m_engine->create_vcpu(0, *this));
    m_base = TRY(m_vcpu->get_state());
    std::fill(m_slot_used.begin(), m_slot_used.end(), false);
    ++m_engines_built;
    return {};
}

CpuState CaseRunner::initial_state(const CaseInput& in) const
{
    CpuState s = m_base;
    s.gpr = in.gpr;
    s.rip = in.code_addr;
    s.rflags = in.rflags | x86::kRflagsFixed;
    s.cs = segment(kUserCs, 0xb, 3, 0, 1);
    s.ds = s.es = s.ss = s.fs = s.gs = segment(kUserDs, 0x3, 3, 1, 0);
    s.fs.base = in.fs_base;
    s.gs.base = in.gs_base;
    s.tr = SegmentReg {};
    s.tr.base = kTss;
    s.tr.limit = kTssLimit;
    s.tr.selector = kTssSel;
    s.tr.type = 0xb; // busy 64-bit TSS
    s.tr.present = 1;
    s.ldtr = SegmentReg {};
    s.ldtr.type = 0x2;
    s.ldtr.present = 1;
    s.ldtr.unusable = 1;
    s.gdt = DescriptorTableReg { kGdt, 7 * 8 - 1 };
    s.idt = DescriptorTableReg { kIdt, 256 * 16 - 1 };
    s.cr0 = x86::kCr0Pe | x86::kCr0Mp | x86::kCr0Et | x86::kCr0Ne | x86::kCr0Wp | x86::kCr0Pg;
    s.cr2 = 0;
    s.cr3 = kPml4;
    s.cr4 = x86::kCr4Pae | x86::kCr4Osfxsr | x86::kCr4Osxmmexcpt;
    s.efer = x86::kEferLme | x86::kEferLma | x86::kEferSce | x86::kEferNxe;
    s.dr7 = 0x400;
    s.events = PendingEvents {};
    s.mp_state = MpState::Runnable;
    // FXSAVE image: FNINIT x87 state, the case's MXCSR and XMM registers; XSTATE_BV says x87 and
    // SSE state are live.
    uint16_t fcw = 0x37f;
    std::memcpy(&s.xsave[0], &fcw, 2);
    std::memset(&s.xsave[2], 0, 22);
    std::memcpy(&s.xsave[24], &in.mxcsr, 4);
    std::memset(&s.xsave[32], 0, 128);
    std::memcpy(&s.xsave[160], in.xmm.data(), in.xmm.size());
    s.xsave[512] |= 0x3;
    return s;
}

Result<Observed> CaseRunner::run(const CaseInput& in)
{
    uint64_t slot_base = in.code_addr & ~(kCodeSlotSize - 1);
    if (in.code_addr < kCodeBase || slot_base >= kCodeBase + kCodeSlots * kCodeSlotSize
        || in.code_addr + in.code.size() > slot_base + kCodeSlotSize)
        return make_error("case code outside its code slot");
    if (in.window.size() != kWindowSize)
        return make_error("case window has {} bytes, want {}", in.window.size(), kWindowSize);
    uint32_t slot = static_cast<uint32_t>((slot_base - kCodeBase) / kCodeSlotSize);
    if (m_slot_used[slot])
        TRY(build_engine());
    m_slot_used[slot] = true;

    TRY(m_memory.fill(slot_base, 0xcc, kCodeSlotSize));
    TRY(m_memory.write(in.code_addr, in.code));
    TRY(m_memory.write(kWindowBase, in.window));
    TRY(m_memory.fill(kKernelStackTop - 0x1000, 0, 0x1000));
    TRY(m_vcpu->set_state(initial_state(in)));

    m_done = false;
    m_fault_vector = -1;
    m_unexpected.clear();
    {
        std::lock_guard lock(m_watch_mutex);
        ++m_run_id;
        m_timed_out = false;
    }
    m_watch_cv.notify_all();
    auto exit = m_vcpu->run();
    bool timed_out;
    {
        std::lock_guard lock(m_watch_mutex);
        ++m_run_id;
        timed_out = m_timed_out;
    }
    m_watch_cv.notify_all();

    Observed out;
    if (!exit.ok()) {
        out.error = "run failed: " + exit.error().message();
    } else if (exit->kind != VcpuExitKind::Kicked) {
        out.error = fmt::format("unexpected exit kind {}: {}", static_cast<int>(exit->kind), exit->message);
    } else if (timed_out) {
        out.error = "timed out (the case never reached its done port)";
    } else if (!m_unexpected.empty()) {
        out.error = m_unexpected;
    } else if (!m_done && m_fault_vector < 0) {
        out.error = "stopped before the done port";
    }
    if (timed_out || !out.error.empty()) {
        // A late kick may still be pending on the vCPU: start the next case on a fresh one.
        std::fill(m_slot_used.begin(), m_slot_used.end(), true);
    }

    auto state = m_vcpu->get_state();
    if (!state.ok())
        return state.release_error();
    if (m_fault_vector >= 0) {
        // The frame below the stack top: SS, RSP, RFLAGS, CS, RIP[, error code].
        auto frame = [&](uint64_t below) { return m_memory.read_obj<uint64_t>(kKernelStackTop - below).value(); };
        out.fault.vector = m_fault_vector;
        out.fault.rip = frame(40);
        out.fault.rflags = frame(24);
        out.fault.rsp = frame(16);
        out.fault.error_code = pushes_error_code(m_fault_vector) ? frame(48) : 0;
        out.fault.cr2 = m_fault_vector == 14 ? state->cr2 : 0;
    }
    out.gpr = state->gpr;
    out.rip = state->rip;
    out.rflags = state->rflags;
    std::memcpy(&out.mxcsr, &state->xsave[24], 4);
    std::memcpy(out.xmm.data(), &state->xsave[160], out.xmm.size());
    out.window.resize(kWindowSize);
    TRY(m_memory.read(kWindowBase, out.window));
    return out;
}

void CaseRunner::pio_read(uint16_t port, std::span<uint8_t> data)
{
    std::memset(data.data(), 0xff, data.size());
    m_unexpected = fmt::format("unexpected port read {:#x}", port);
    m_vcpu->kick();
}

void CaseRunner::pio_write(uint16_t port, std::span<const uint8_t> data)
{
    if (port == kDonePort) {
        m_done = true;
    } else if (port == kFaultPort && !data.empty()) {
        if (m_fault_vector < 0)
            m_fault_vector = data[0];
    } else {
        m_unexpected = fmt::format("unexpected port write {:#x}", port);
    }
    m_vcpu->kick();
}

void CaseRunner::mmio_read(uint64_t gpa, std::span<uint8_t> data)
{
    std::memset(data.data(), 0xff, data.size());
    m_unexpected = fmt::format("unexpected MMIO read {:#x}", gpa);
    m_vcpu->kick();
}

void CaseRunner::mmio_write(uint64_t gpa, std::span<const uint8_t>)
{
    m_unexpected = fmt::format("unexpected MMIO write {:#x}", gpa);
    m_vcpu->kick();
}

void CaseRunner::watchdog()
{
    std::unique_lock lock(m_watch_mutex);
    while (!m_stop) {
        if (!(m_run_id & 1)) {
            m_watch_cv.wait(lock);
            continue;
        }
        uint64_t id = m_run_id;
        if (m_watch_cv.wait_for(lock, kTimeout, [&] { return m_stop || m_run_id != id; }))
            continue;
        m_timed_out = true;
        m_vcpu->kick();
        m_watch_cv.wait(lock, [&] { return m_stop || m_run_id != id; });
    }
}

} // namespace vessel::difftest
