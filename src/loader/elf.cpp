#include "loader/elf.h"

#include <elf.h>

#include <algorithm>

#include "loader/loader_util.h"

namespace vessel::loader {

namespace {

std::string_view segment_type_name(uint32_t type)
{
    return type == PT_LOAD ? "PT_LOAD" : "PT_NOTE";
}

template<typename Ehdr>
Result<Ehdr> read_ehdr(std::span<const uint8_t> data)
{
    if (data.size() < sizeof(Ehdr))
        return make_error("ELF header is truncated ({} bytes, need {})", data.size(), sizeof(Ehdr));
    return read_le<Ehdr>(data, 0);
}

template<typename Ehdr, typename Phdr>
Result<ElfImage> parse_elf_class(std::span<const uint8_t> data, bool is64)
{
    Ehdr ehdr = TRY(read_ehdr<Ehdr>(data));
    ElfImage image;
    image.is64 = is64;
    image.machine = ehdr.e_machine;
    image.entry = ehdr.e_entry;
    if (ehdr.e_type != ET_EXEC && ehdr.e_type != ET_DYN)
        return make_error("ELF type {} is not an executable", ehdr.e_type);
    if (ehdr.e_machine != EM_386 && ehdr.e_machine != EM_X86_64)
        return make_error("ELF machine {} is not x86", ehdr.e_machine);
    if (ehdr.e_phnum == 0)
        return make_error("ELF file has no program headers");
    if (ehdr.e_phnum == PN_XNUM)
        return make_error("ELF files with {} or more program headers are not supported", PN_XNUM);
    if (ehdr.e_phentsize < sizeof(Phdr))
        return make_error("ELF program header size {} is too small (need {})", ehdr.e_phentsize, sizeof(Phdr));
    uint64_t table_size = uint64_t { ehdr.e_phnum } * ehdr.e_phentsize;
    if (!range_in(ehdr.e_phoff, table_size, data.size()))
        return make_error("ELF program header table ({} entries at offset {:#x}) lies outside the file ({} bytes)",
                          ehdr.e_phnum, uint64_t { ehdr.e_phoff }, data.size());

    for (unsigned i = 0; i < ehdr.e_phnum; i++) {
        auto phdr = read_le<Phdr>(data, static_cast<size_t>(ehdr.e_phoff + uint64_t { i } * ehdr.e_phentsize));
        if (phdr.p_type != PT_LOAD && phdr.p_type != PT_NOTE)
            continue;
        ElfSegment seg { phdr.p_type, phdr.p_offset, phdr.p_vaddr, phdr.p_paddr, phdr.p_filesz, phdr.p_memsz, phdr.p_align };
        if (!range_in(seg.offset, seg.filesz, data.size()))
            return make_error("ELF segment {} ({}, {} bytes at file offset {:#x}) lies outside the file ({} bytes)",
                              i, segment_type_name(seg.type), seg.filesz, seg.offset, data.size());
        if (seg.type == PT_LOAD && seg.filesz > seg.memsz)
            return make_error("ELF segment {} has p_filesz {} larger than p_memsz {}", i, seg.filesz, seg.memsz);
        image.segments.push_back(seg);
    }
    return image;
}

} // namespace

bool is_elf(std::span<const uint8_t> data)
{
    return data.size() >= SELFMAG && std::equal(data.begin(), data.begin() + SELFMAG, ELFMAG);
}

Result<ElfImage> parse_elf(std::span<const uint8_t> data)
{
    if (!is_elf(data) || data.size() < EI_NIDENT)
        return make_error("not an ELF file");
    if (data[EI_DATA] != ELFDATA2LSB)
        return make_error("big-endian ELF files are not supported");
    if (data[EI_VERSION] != EV_CURRENT)
        return make_error("unknown ELF version {}", data[EI_VERSION]);
    switch (data[EI_CLASS]) {
    case ELFCLASS32: return parse_elf_class<Elf32_Ehdr, Elf32_Phdr>(data, false);
    case ELFCLASS64: return parse_elf_class<Elf64_Ehdr, Elf64_Phdr>(data, true);
    default: return make_error("unknown ELF class {}", data[EI_CLASS]);
    }
}

Result<uint64_t> load_elf_segments(GuestMemory& memory, std::span<const uint8_t> data, const ElfImage& image)
{
    // Check every segment before writing any, so that a bad image leaves guest RAM untouched.
    uint64_t highest_end = 0;
    unsigned loadable = 0;
    for (size_t i = 0; i < image.segments.size(); i++) {
        const auto& seg = image.segments[i];
        if (seg.type != PT_LOAD || seg.memsz == 0)
            continue;
        loadable++;
        auto what = fmt::format("ELF segment {} ({:#x} bytes)", i, seg.memsz);
        TRY(check_above_low_memory(seg.paddr, seg.memsz, what));
        if (!memory.contains(seg.paddr, seg.memsz))
            return make_error("{} at guest-physical {:#x} lies outside guest RAM ({} MiB)", what, seg.paddr,
                              memory.size() >> 20);
        highest_end = std::max(highest_end, seg.paddr + seg.memsz);
    }
    if (loadable == 0)
        return make_error("ELF file has no loadable segments");

    for (const auto& seg : image.segments) {
        if (seg.type != PT_LOAD || seg.memsz == 0)
            continue;
        TRY(memory.write(seg.paddr, data.subspan(static_cast<size_t>(seg.offset), static_cast<size_t>(seg.filesz))));
        TRY(memory.fill(seg.paddr + seg.filesz, 0, seg.memsz - seg.filesz));
    }
    return highest_end;
}

Result<std::optional<std::span<const uint8_t>>> find_elf_note(std::span<const uint8_t> data, const ElfImage& image,
                                                             std::string_view name, uint32_t type)
{
    using Found = std::optional<std::span<const uint8_t>>;
    for (const auto& seg : image.segments) {
        if (seg.type != PT_NOTE)
            continue;
        // Notes are 4-byte aligned, except in segments that declare 8-byte alignment.
        uint64_t align = seg.align == 8 ? 8 : 4;
        auto notes = data.subspan(static_cast<size_t>(seg.offset), static_cast<size_t>(seg.filesz));
        uint64_t pos = 0;
        while (notes.size() - pos >= 12) {
            uint32_t namesz = read_le<uint32_t>(notes, pos);
            uint32_t descsz = read_le<uint32_t>(notes, pos + 4);
            uint32_t note_type = read_le<uint32_t>(notes, pos + 8);
            uint64_t name_off = pos + 12;
            uint64_t desc_off = name_off + align_up(namesz, align);
            uint64_t next = desc_off + align_up(descsz, align);
            if (!range_in(name_off, namesz, notes.size()) || !range_in(desc_off, descsz, notes.size()))
                return make_error("ELF note at file offset {:#x} overruns its segment", seg.offset + pos);
            auto note_name = notes.subspan(name_off, namesz);
            // namesz counts the terminating NUL.
            bool name_matches = namesz == name.size() + 1 && note_name[name.size()] == 0
                && std::equal(name.begin(), name.end(), note_name.begin());
            if (name_matches && note_type == type)
                return Found(notes.subspan(desc_off, descsz));
            if (next >= notes.size())
                break;
            pos = next;
        }
    }
    return Found {};
}

Result<std::optional<uint32_t>> find_pvh_entry(std::span<const uint8_t> data, const ElfImage& image)
{
    auto desc = TRY(find_elf_note(data, image, "Xen", kXenElfNotePhys32Entry));
    if (!desc)
        return std::optional<uint32_t> {};
    // 32-bit kernels use a 4-byte descriptor, 64-bit ones may use a pointer-sized one.
    uint64_t entry = 0;
    if (desc->size() == 4)
        entry = read_le<uint32_t>(*desc, 0);
    else if (desc->size() == 8)
        entry = read_le<uint64_t>(*desc, 0);
    else
        return make_error("PVH entry note has a {}-byte descriptor (expected 4 or 8)", desc->size());
    if (entry > UINT32_MAX)
        return make_error("PVH entry point {:#x} is not a 32-bit address", entry);
    return std::optional<uint32_t>(static_cast<uint32_t>(entry));
}

bool elf_paddr_loaded(const ElfImage& image, uint64_t paddr)
{
    return std::any_of(image.segments.begin(), image.segments.end(), [&](const ElfSegment& seg) {
        return seg.type == PT_LOAD && paddr >= seg.paddr && paddr - seg.paddr < seg.memsz;
    });
}

std::optional<uint64_t> elf_virt_to_phys(const ElfImage& image, uint64_t vaddr)
{
    for (const auto& seg : image.segments) {
        if (seg.type == PT_LOAD && vaddr >= seg.vaddr && vaddr - seg.vaddr < seg.memsz)
            return seg.paddr + (vaddr - seg.vaddr);
    }
    return std::nullopt;
}

} // namespace vessel::loader
