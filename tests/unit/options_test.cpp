#include <gtest/gtest.h>

#include "base/file.h"
#include "cli/options.h"

using namespace vessel;

namespace {

Result<CliOptions> parse(std::vector<std::string> args)
{
    std::vector<const char*> argv { "vessel" };
    for (auto& a : args)
        argv.push_back(a.c_str());
    return parse_command_line(static_cast<int>(argv.size()), argv.data());
}

std::string error_of(std::vector<std::string> args)
{
    auto r = parse(std::move(args));
    return r.ok() ? std::string("<no error>") : r.error().message();
}

} // namespace

TEST(Options, RunFlagsFillTheConfig)
{
    auto r = parse({ "run", "--kernel", "k", "--initrd", "i", "--cmdline", "a b", "--mem", "1G", "--cpus", "3",
                     "--engine", "kvm", "--boot", "pvh", "--no-reboot", "--hugepages" });
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_EQ(r->command, Command::Run);
    const VmConfig& c = r->vm;
    EXPECT_EQ(c.kernel, "k");
    EXPECT_EQ(c.initrd, "i");
    EXPECT_EQ(c.cmdline, "a b");
    EXPECT_EQ(c.mem_bytes, 1ULL << 30);
    EXPECT_EQ(c.cpus, 3u);
    EXPECT_EQ(c.engine, EngineKind::Kvm);
    EXPECT_EQ(c.boot, BootPath::Pvh);
    EXPECT_EQ(c.on_reset, ResetAction::Exit);
    EXPECT_TRUE(c.hugepages);
}

TEST(Options, DefaultsAreSensible)
{
    auto r = parse({ "run", "--kernel", "k" });
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->vm.mem_bytes, 256ULL << 20);
    EXPECT_EQ(r->vm.cpus, 1u);
    EXPECT_EQ(r->vm.engine, EngineKind::Auto);
    EXPECT_EQ(r->vm.boot, BootPath::Auto);
    EXPECT_EQ(r->vm.cmdline, "console=ttyS0");
    EXPECT_EQ(r->vm.on_reset, ResetAction::Reboot);
}

TEST(Options, FlagErrorsNameTheFlag)
{
    EXPECT_NE(error_of({ "run", "--mem", "12X" }).find("--mem"), std::string::npos);
    EXPECT_NE(error_of({ "run", "--engine", "warp" }).find("--engine: unknown engine 'warp'"), std::string::npos);
    EXPECT_NE(error_of({ "run", "--boot", "x" }).find("--boot"), std::string::npos);
    EXPECT_NE(error_of({ "run", "--cpus", "two" }).find("--cpus"), std::string::npos);
    EXPECT_NE(error_of({ "run", "--bogus" }).find("--bogus"), std::string::npos);
    EXPECT_NE(error_of({ "run", "--config", "/nonexistent.json" }).find("--config"), std::string::npos);
}

TEST(Options, HelpListsEveryRunFlag)
{
    auto r = parse({ "run", "--help" });
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->command, Command::Help);
    for (const char* flag : { "--kernel", "--initrd", "--cmdline", "--mem", "--cpus", "--engine", "--config",
                              "--boot", "--no-reboot" })
        EXPECT_NE(r->help_text.find(flag), std::string::npos) << flag;
}

TEST(JsonConfig, AppliesEveryKey)
{
    VmConfig c;
    auto r = apply_json_config(c,
                               R"({"kernel": "vmlinuz", "initrd": "/abs/initrd", "cmdline": "quiet", "mem": "512M",
                                   "cpus": 2, "engine": "soft", "boot": "decompressor", "hugepages": true,
                                   "on_reset": "exit"})",
                               "vm.json", "/etc/vms");
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_EQ(c.kernel, "/etc/vms/vmlinuz") << "relative paths resolve against the config's directory";
    EXPECT_EQ(c.initrd, "/abs/initrd");
    EXPECT_EQ(c.cmdline, "quiet");
    EXPECT_EQ(c.mem_bytes, 512ULL << 20);
    EXPECT_EQ(c.cpus, 2u);
    EXPECT_EQ(c.engine, EngineKind::Soft);
    EXPECT_EQ(c.boot, BootPath::Decompressor);
    EXPECT_TRUE(c.hugepages);
    EXPECT_EQ(c.on_reset, ResetAction::Exit);
}

TEST(JsonConfig, MemAcceptsByteCounts)
{
    VmConfig c;
    ASSERT_TRUE(apply_json_config(c, R"({"mem": 33554432})", "x", "").ok());
    EXPECT_EQ(c.mem_bytes, 32ULL << 20);
}

TEST(JsonConfig, ErrorsNameTheFileAndKey)
{
    auto err = [](const char* json) {
        VmConfig c;
        auto r = apply_json_config(c, json, "vm.json", "");
        return r.ok() ? std::string("<no error>") : r.error().message();
    };
    EXPECT_NE(err("{").find("config 'vm.json': not valid JSON"), std::string::npos);
    EXPECT_NE(err("[1]").find("top level must be an object"), std::string::npos);
    EXPECT_NE(err(R"({"memory": 1})").find("unknown key \"memory\""), std::string::npos);
    EXPECT_NE(err(R"({"cpus": "two"})").find("\"cpus\""), std::string::npos);
    EXPECT_NE(err(R"({"cpus": -1})").find("\"cpus\""), std::string::npos);
    EXPECT_NE(err(R"({"mem": "lots"})").find("\"mem\""), std::string::npos);
    EXPECT_NE(err(R"({"mem": true})").find("\"mem\""), std::string::npos);
    EXPECT_NE(err(R"({"engine": "warp"})").find("\"engine\""), std::string::npos);
    EXPECT_NE(err(R"({"kernel": 5})").find("\"kernel\" must be a string"), std::string::npos);
    EXPECT_NE(err(R"({"hugepages": "yes"})").find("\"hugepages\""), std::string::npos);
    EXPECT_NE(err(R"({"on_reset": "explode"})").find("\"on_reset\""), std::string::npos);
}

TEST(ValidateConfig, ChecksRanges)
{
    VmConfig c;
    c.kernel = "k";
    EXPECT_TRUE(validate_config(c, 8).ok());
    c.cpus = 0;
    EXPECT_NE(validate_config(c, 8).error().message().find("--cpus"), std::string::npos);
    c.cpus = 9;
    EXPECT_NE(validate_config(c, 8).error().message().find("at most 8"), std::string::npos);
    c.cpus = 255;
    EXPECT_NE(validate_config(c, 1000).error().message().find("at most 254"), std::string::npos);
    c.cpus = 1;
    c.mem_bytes = 8 << 20;
    EXPECT_NE(validate_config(c, 8).error().message().find("--mem"), std::string::npos);
    c.mem_bytes = (64ULL << 20) + 1;
    EXPECT_NE(validate_config(c, 8).error().message().find("multiple"), std::string::npos);
    c.mem_bytes = host_memory_bytes() + (1ULL << 30);
    EXPECT_NE(validate_config(c, 8).error().message().find("host"), std::string::npos);
    c.mem_bytes = 64 << 20;
    c.kernel.clear();
    EXPECT_NE(validate_config(c, 8).error().message().find("--kernel is required"), std::string::npos);
}

TEST(ParseSize, UnitsAndErrors)
{
    EXPECT_EQ(parse_size("4096").value(), 4096u);
    EXPECT_EQ(parse_size("16M").value(), 16ULL << 20);
    EXPECT_EQ(parse_size("2G").value(), 2ULL << 30);
    EXPECT_EQ(parse_size("512K").value(), 512ULL << 10);
    EXPECT_EQ(parse_size("1GiB").value(), 1ULL << 30);
    EXPECT_FALSE(parse_size("").ok());
    EXPECT_FALSE(parse_size("M").ok());
    EXPECT_FALSE(parse_size("12Q").ok());
    EXPECT_FALSE(parse_size("-1").ok());
    EXPECT_FALSE(parse_size("99999999999999999999").ok());
    EXPECT_FALSE(parse_size("20000000T").ok());
}

TEST(Options, DeviceFlagsFillTheConfig)
{
    auto r = parse({ "run", "--kernel", "k", "--disk", "a.img", "--disk", "b.img,ro,serial=disk-b", "--net",
                     "tap=vtap0,mac=52:54:00:aa:bb:cc", "--net", "mac=52:54:00:00:00:01", "--vsock",
                     "cid=7,socket=/tmp/v.sock", "--rng", "--balloon", "--console", "virtio" });
    ASSERT_TRUE(r.ok()) << r.error().message();
    const VmConfig& vm = r.value().vm;
    ASSERT_EQ(vm.disks.size(), 2u);
    EXPECT_EQ(vm.disks[0].path, "a.img");
    EXPECT_FALSE(vm.disks[0].read_only);
    EXPECT_EQ(vm.disks[1].path, "b.img");
    EXPECT_TRUE(vm.disks[1].read_only);
    EXPECT_EQ(vm.disks[1].serial, "disk-b");
    ASSERT_EQ(vm.nets.size(), 2u);
    EXPECT_EQ(vm.nets[0].tap, "vtap0");
    ASSERT_TRUE(vm.nets[0].mac.has_value());
    EXPECT_EQ((*vm.nets[0].mac)[5], 0xcc);
    EXPECT_TRUE(vm.nets[1].tap.empty());
    ASSERT_TRUE(vm.vsock.has_value());
    EXPECT_EQ(vm.vsock->cid, 7u);
    EXPECT_EQ(vm.vsock->socket, "/tmp/v.sock");
    EXPECT_TRUE(vm.rng);
    EXPECT_TRUE(vm.balloon);
    EXPECT_EQ(vm.console, ConsoleKind::Virtio);
}

TEST(Options, DeviceSpecErrorsSayWhatIsWrong)
{
    EXPECT_NE(error_of({ "run", "--kernel", "k", "--disk", "a.img,rw" }).find("unknown disk option 'rw'"),
              std::string::npos);
    EXPECT_NE(error_of({ "run", "--kernel", "k", "--disk", "serial=x" }).find("needs an image path"), std::string::npos);
    EXPECT_NE(error_of({ "run", "--kernel", "k", "--disk", "a,serial=123456789012345678901" }).find("longer than 20"),
              std::string::npos);
    EXPECT_NE(error_of({ "run", "--kernel", "k", "--net", "mac=01:00:00:00:00:01" }).find("multicast"),
              std::string::npos);
    EXPECT_NE(error_of({ "run", "--kernel", "k", "--net", "mac=52:54:00:zz:00:01" }).find("not a MAC"),
              std::string::npos);
    EXPECT_NE(error_of({ "run", "--kernel", "k", "--net", "tap=waytoolongtapname0" }).find("1 to 15"),
              std::string::npos);
    EXPECT_NE(error_of({ "run", "--kernel", "k", "--vsock", "cid=2,socket=/x" }).find("from 3"), std::string::npos);
    EXPECT_NE(error_of({ "run", "--kernel", "k", "--vsock", "cid=5" }).find("socket=PATH"), std::string::npos);
    EXPECT_NE(error_of({ "run", "--kernel", "k", "--console", "tty" }).find("unknown console"), std::string::npos);
    EXPECT_NE(error_of({ "run", "--kernel", "k", "--disk", "a,,ro" }).find("empty item"), std::string::npos);
}

TEST(JsonConfig, DevicesAsStringsOrObjects)
{
    VmConfig c;
    auto r = apply_json_config(c,
                               R"({"disks": ["a.img,ro", {"path": "b.img", "serial": "B"}],
                                   "net": [{"tap": "vtap1"}], "vsock": {"cid": 9, "socket": "v.sock"},
                                   "rng": true, "balloon": false, "console": "virtio"})",
                               "cfg.json", "/base");
    ASSERT_TRUE(r.ok()) << r.error().message();
    ASSERT_EQ(c.disks.size(), 2u);
    EXPECT_EQ(c.disks[0].path, "/base/a.img");
    EXPECT_TRUE(c.disks[0].read_only);
    EXPECT_EQ(c.disks[1].path, "/base/b.img");
    EXPECT_EQ(c.disks[1].serial, "B");
    ASSERT_EQ(c.nets.size(), 1u);
    EXPECT_EQ(c.nets[0].tap, "vtap1");
    ASSERT_TRUE(c.vsock.has_value());
    EXPECT_EQ(c.vsock->cid, 9u);
    EXPECT_EQ(c.vsock->socket, "/base/v.sock");
    EXPECT_TRUE(c.rng);
    EXPECT_FALSE(c.balloon);
    EXPECT_EQ(c.console, ConsoleKind::Virtio);

    VmConfig d;
    auto bad = apply_json_config(d, R"({"disks": "a.img"})", "cfg.json", "");
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.error().message().find("\"disks\" must be a list"), std::string::npos);
    bad = apply_json_config(d, R"({"disks": [{"path": "a", "ro": 3.5}]})", "cfg.json", "");
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.error().message().find("\"ro\""), std::string::npos);
}
