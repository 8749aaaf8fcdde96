#include "engine/probe.h"


#include <cpuid.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include <fmt/format.h>

namespace vessel {

namespace {

bool cpu_has_vmx_or_svm()
{
    unsigned eax, ebx, ecx, edx;
    if (__get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & (1u << 5)))
        return true; // VMX
    if (__get_cpuid(0x80000001, &eax, &ebx, &ecx, &edx) && (ecx & (1u << 2)))
        return true; // SVM
    return false;
}

bool path_exists(const char* path)
{
    struct stat st {};
    return ::stat(path, &st) == 0;
}

} // namespace

const char* engine_name(EngineKind kind)
{
    switch (kind) {
    case EngineKind::Auto: return "auto";
    case EngineKind::Kvm: return "kvm";
    case EngineKind::Soft: return "soft";
    }
    return "?";
}

HostProbe probe_host()
{
    HostProbe p;
    int fd = ::open("/dev/kvm", O_RDWR | O_CLOEXEC);
    std::string kvm_error;
    if (fd >= 0) {
        p.kvm_device = ::ioctl(fd, KVM_GET_API_VERSION, 0) == KVM_API_VERSION;
        ::close(fd);
    } else {
        kvm_error = std::strerror(errno);
    }
    p.hw_virt = cpu_has_vmx_or_svm();
    p.kvm_pvm = path_exists("/sys/module/kvm_pvm");

    if (!p.kvm_device) {
        p.choice = EngineKind::Soft;
        p.reason = kvm_error.empty() ? "/dev/kvm does not speak the expected KVM API"
                                     : fmt::format("/dev/kvm is not usable ({})", kvm_error);
    } else if (p.kvm_pvm) {
        p.choice = EngineKind::Soft;
        p.reason = "/dev/kvm is kvm_pvm, a paravirtual nested hypervisor that emulates guest kernel mode "
                   "about 1000x slower than hardware";
    } else if (!p.hw_virt) {
        p.choice = EngineKind::Soft;
        p.reason = "the host CPU reports neither VT-x nor AMD-V, so /dev/kvm cannot run guest kernel code natively";
    } else {
        p.choice = EngineKind::Kvm;
        p.reason = "/dev/kvm is usable and the CPU has hardware virtualization";
    }
    return p;
}

} // namespace vessel

namespace vessel {

uint64_t host_tsc_khz()
{
    static const uint64_t khz = [] {
        FILE* f = std::fopen("/proc/cpuinfo", "r");
        if (!f)
            return uint64_t(0);
        char line[256];
        uint64_t result = 0;
        while (std::fgets(line, sizeof(line), f)) {
            double bogomips = 0;
            if (std::sscanf(line, "bogomips : %lf", &bogomips) == 1) {
                if (bogomips > 1000 && bogomips < 20000) // 0.5 .. 10 GHz
                    result = static_cast<uint64_t>(bogomips * 500 + 0.5);
                break;
            }
        }
        std::fclose(f);
        return result;
    }();
    return khz;
}

} // namespace vessel
