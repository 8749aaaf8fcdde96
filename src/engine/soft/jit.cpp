#include "engine/soft/jit.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include <xbyak/xbyak.h>

#include "base/log.h"
#include "engine/soft/block_cache.h"
#include "engine/soft/interpreter.h"
#include "engine/soft/jit_emit.h"

// libgcc's unwinder: registers an .eh_frame image (CIE + FDEs, zero-terminated).
extern "C" void __register_frame(void* begin);
extern "C" void __deregister_frame(void* begin);

namespace vessel::soft {

namespace {

void put_u32(std::vector<uint8_t>& v, uint32_t x)
{
    for (int i = 0; i < 4; ++i)
        v.push_back(static_cast<uint8_t>(x >> (8 * i)));
}
void put_u64(std::vector<uint8_t>& v, uint64_t x)
{
    for (int i = 0; i < 8; ++i)
        v.push_back(static_cast<uint8_t>(x >> (8 * i)));
}
void pad_to_8(std::vector<uint8_t>& v, size_t start)
{
    while ((v.size() - start) % 8 != 4) // the length field (4 bytes) is not counted
        v.push_back(0); // DW_CFA_nop
}

// One CIE and one FDE covering [code, code + size): the frame the entry stub builds
// (return address at CFA-8, rbx rbp r12 r13 r14 r15 below it, CFA = rsp + 64) is the frame of
// every instruction in translated code.
std::vector<uint8_t> frame_description(uint64_t code, uint64_t size)
{
    std::vector<uint8_t> v;
    // CIE
    size_t cie = v.size();
    put_u32(v, 0); // length, patched
    put_u32(v, 0); // CIE id
    v.push_back(1); // version
    v.push_back('z');
    v.push_back('R');
    v.push_back(0);
    v.push_back(1); // code alignment factor
    v.push_back(0x78); // data alignment factor -8 (SLEB128)
    v.push_back(16); // return address column (RIP)
    v.push_back(1); // augmentation data length
    v.push_back(0x00); // FDE pointer encoding: DW_EH_PE_absptr
    v.push_back(0x0c); // DW_CFA_def_cfa rsp, 64
    v.push_back(7);
    v.push_back(64);
    const uint8_t saved[][2] = { { 16, 1 }, { 3, 2 }, { 6, 3 }, { 12, 4 }, { 13, 5 }, { 14, 6 }, { 15, 7 } };
    for (auto& s : saved) {
        v.push_back(static_cast<uint8_t>(0x80 | s[0])); // DW_CFA_offset reg, n (at CFA - 8n)
        v.push_back(s[1]);
    }
    pad_to_8(v, cie);
    uint32_t cie_len = static_cast<uint32_t>(v.size() - cie - 4);
    std::memcpy(&v[cie], &cie_len, 4);
    // FDE
    size_t fde = v.size();
    put_u32(v, 0);
    put_u32(v, static_cast<uint32_t>(v.size() - cie)); // CIE pointer: distance back to the CIE
    put_u64(v, code);
    put_u64(v, size);
    v.push_back(0); // augmentation data length
    pad_to_8(v, fde);
    uint32_t fde_len = static_cast<uint32_t>(v.size() - fde - 4);
    std::memcpy(&v[fde], &fde_len, 4);
    put_u32(v, 0); // terminator
    return v;
}

const uint8_t kUntranslatableTag = 0;

} // namespace

const void* jit_untranslatable()
{
    return &kUntranslatableTag;
}

JitMode jit_mode_from_env()
{
    const char* s = std::getenv("VESSEL_JIT");
    if (!s)
        return JitMode::On;
    std::string_view v(s);
    if (v == "off" || v == "0")
        return JitMode::Off;
    if (v == "eager")
        return JitMode::Eager;
    return JitMode::On;
}

std::unique_ptr<Jit> Jit::create(size_t buffer_bytes)
{
    std::unique_ptr<Jit> jit(new Jit());
    jit->m_size = buffer_bytes;
    jit->m_fd = memfd_create("vessel-jit", MFD_CLOEXEC);
    if (jit->m_fd < 0 || ftruncate(jit->m_fd, static_cast<off_t>(buffer_bytes)) != 0) {
        log_warn("soft engine: no translation buffer ({}); interpreting only", std::strerror(errno));
        return nullptr;
    }
    void* rw = mmap(nullptr, buffer_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, jit->m_fd, 0);
    void* rx = mmap(nullptr, buffer_bytes, PROT_READ | PROT_EXEC, MAP_SHARED, jit->m_fd, 0);
    if (rw == MAP_FAILED || rx == MAP_FAILED) {
        log_warn("soft engine: cannot map the translation buffer ({}); interpreting only", std::strerror(errno));
        if (rw != MAP_FAILED)
            munmap(rw, buffer_bytes);
        if (rx != MAP_FAILED)
            munmap(rx, buffer_bytes);
        return nullptr;
    }
    jit->m_rw = static_cast<uint8_t*>(rw);
    jit->m_rx = static_cast<uint8_t*>(rx);
    jit->m_emitter = make_jit_emitter();
    jit->m_eh_frame = frame_description(reinterpret_cast<uint64_t>(jit->m_rx), buffer_bytes);
    __register_frame(jit->m_eh_frame.data());
    jit->m_eh_registered = true;
    if (const char* map = std::getenv("VESSEL_JIT_PERFMAP"); map && *map && std::string_view(map) != "0") {
        // One file per process (vCPUs append to it; perf reads it after the run).
        std::string path = "/tmp/perf-" + std::to_string(getpid()) + ".map";
        jit->m_perf_map = std::fopen(path.c_str(), "a");
        if (!jit->m_perf_map)
            log_warn("soft engine: cannot open {}: {}", path, std::strerror(errno));
    }
    return jit;
}

Jit::~Jit()
{
    log_debug("soft engine: translator: {} translations, {} KiB of code in use, buffer reset {} times", m_translations,
        (m_used - m_stub_bytes) / 1024, m_resets);
    if (g_jit_stats)
        std::fprintf(stderr, "jit: %lu translations, %zu KiB in use, %lu buffer resets\n",
            static_cast<unsigned long>(m_translations), (m_used - m_stub_bytes) / 1024,
            static_cast<unsigned long>(m_resets));
    jit_print_stats();
    if (const char* dump = std::getenv("VESSEL_JIT_DUMP"); dump && m_rw) {
        // The code buffer as it is now (disassemble with objdump -b binary -m i386:x86-64).
        if (FILE* f = std::fopen(dump, "wb")) {
            std::fwrite(m_rw, 1, m_used, f);
            std::fclose(f);
        }
    }
    if (m_perf_map)
        std::fclose(m_perf_map);
    if (m_eh_registered)
        __deregister_frame(m_eh_frame.data());
    if (m_rw)
        munmap(m_rw, m_size);
    if (m_rx)
        munmap(m_rx, m_size);
    if (m_fd >= 0)
        close(m_fd);
}

void Jit::patch(const void** slot, const void* target)
{
    auto at = reinterpret_cast<const uint8_t*>(slot);
    if (at < m_rx || at + 8 > m_rx + m_used)
        return;
    auto value = reinterpret_cast<uint64_t>(target);
    std::memcpy(m_rw + (at - m_rx), &value, 8);
}

extern "C" const void* jit_link(Cpu* c, BlockCache* cache, const void** slot)
{
    // What the execution loop would check between two blocks.
    if (c->stop_block || c->halted || c->interrupt_shadow || c->attention.load(std::memory_order_relaxed)
        || c->machine->code_epoch() != c->code_epoch_seen)
        return nullptr;
    uint64_t linear = code_linear(*c);
    const Block* b = cache->find_linear(*c, linear);
    if (!b)
        return nullptr;
    const void* code = cache->translated(*c, *b);
    if (!code)
        return nullptr;
    cache->remember_code(linear, code);
    // A patched slot skips every check of find_linear: only a block in the same physical page
    // as the one jumping (the caller made sure of that) and wholly inside it qualifies; that page
    // cannot change under a valid block without it being replaced.
    if (slot && b->gpa2 == kNoPage)
        cache->patch(slot, code);
    c->insn_start = c->rip;
    return code;
}

void Jit::reset()
{
    ++m_resets;
    m_used = m_stub_bytes;
}

const void* Jit::translate(Cpu& c, const BlockCache& cache, const Block& block, bool user)
{
    CpuLayout layout = CpuLayout::of(c, cache);
    try {
        if (!m_entry) {
            size_t exit_offset = 0;
            EmittedCode stubs = emit_stubs(*m_emitter, layout, exit_offset);
            m_exit = m_rx + exit_offset;
            std::memcpy(m_rw, stubs.bytes, stubs.size);
            m_entry = reinterpret_cast<Entry>(m_rx);
            m_stub_bytes = (stubs.size + 63) & ~size_t { 63 };
            m_used = m_stub_bytes;
        }
        layout.exit_stub = m_exit;
        m_slots.clear();
        EmittedCode code = emit_block(*m_emitter, layout, block, user, m_slots);
        if (m_used + code.size > m_size)
            return nullptr;
        std::memcpy(m_rw + m_used, code.bytes, code.size);
        for (const LinkSlot& s : m_slots) {
            auto stub = reinterpret_cast<uint64_t>(m_rx + m_used + s.stub);
            std::memcpy(m_rw + m_used + s.slot, &stub, 8);
        }
        const void* entry = m_rx + m_used;
        if (m_perf_map) {
            std::fprintf(m_perf_map, "%lx %zx vessel-guest-%lx\n", reinterpret_cast<unsigned long>(entry), code.size,
                static_cast<unsigned long>(c.rip));
            std::fflush(m_perf_map);
        }
        m_used = (m_used + code.size + 15) & ~size_t { 15 };
        ++m_translations;
        return entry;
    } catch (const Xbyak::Error& e) {
        // A form the emitter cannot encode: this block stays interpreted.
        log_debug("soft engine: block at {:#x} not translated: {}", block.gpa, e.what());
        return jit_untranslatable();
    }
}

} // namespace vessel::soft
