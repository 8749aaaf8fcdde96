// The VMM's event loop (fd callbacks, deadlines, work posted from other threads, removal while
// dispatching) and the pre-boot configuration's command line for a root drive.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <thread>

#include "vmm/event_loop.h"
#include "vmm/vm_resources.h"

using namespace vessel;

TEST(EventLoop, DispatchesReadableFdsAndTimersInOrder)
{
    auto loop = EventLoop::create().release_value();
    int p[2];
    ASSERT_EQ(::pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    std::vector<std::string> seen;
    auto token = loop->add_fd(p[0], EPOLLIN, [&](uint32_t) {
        char c;
        while (::read(p[0], &c, 1) == 1)
            seen.push_back(std::string("fd:") + c);
    });
    ASSERT_TRUE(token.ok());
    loop->add_timer(std::chrono::milliseconds(30), [&] {
        seen.push_back("timer30");
        loop->stop();
    });
    loop->add_timer(std::chrono::milliseconds(10), [&] {
        seen.push_back("timer10");
        ASSERT_EQ(::write(p[1], "a", 1), 1);
    });
    auto cancelled = loop->add_timer(std::chrono::milliseconds(20), [&] { seen.push_back("cancelled"); });
    loop->cancel_timer(cancelled);
    ASSERT_TRUE(loop->run().ok());
    EXPECT_EQ(seen, (std::vector<std::string> { "timer10", "fd:a", "timer30" }));
    loop->remove_fd(token.value());
    ::close(p[0]);
    ::close(p[1]);
}

TEST(EventLoop, WorkPostedFromOtherThreadsRunsOnTheLoop)
{
    auto loop = EventLoop::create().release_value();
    std::thread::id loop_thread = std::this_thread::get_id();
    std::atomic<int> ran { 0 };
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&] {
            for (int i = 0; i < 250; ++i)
                loop->post([&] {
                    EXPECT_EQ(std::this_thread::get_id(), loop_thread);
                    if (++ran == 1000)
                        loop->stop();
                });
        });
    }
    ASSERT_TRUE(loop->run().ok());
    for (auto& t : threads)
        t.join();
    EXPECT_EQ(ran.load(), 1000);
}

TEST(EventLoop, ACallbackMayRemoveARegistrationReportedInTheSameBatch)
{
    auto loop = EventLoop::create().release_value();
    int a[2], b[2];
    ASSERT_EQ(::pipe2(a, O_NONBLOCK | O_CLOEXEC), 0);
    ASSERT_EQ(::pipe2(b, O_NONBLOCK | O_CLOEXEC), 0);
    ASSERT_EQ(::write(a[1], "x", 1), 1);
    ASSERT_EQ(::write(b[1], "y", 1), 1);
    int calls = 0;
    EventLoop::Token ta = 0, tb = 0;
    // Whichever is called first removes the other: the second must never run.
    ta = loop->add_fd(a[0], EPOLLIN,
                 [&](uint32_t) {
                     ++calls;
                     loop->remove_fd(tb);
                     loop->remove_fd(ta);
                 })
             .release_value();
    tb = loop->add_fd(b[0], EPOLLIN,
                 [&](uint32_t) {
                     ++calls;
                     loop->remove_fd(ta);
                     loop->remove_fd(tb);
                 })
             .release_value();
    loop->add_timer(std::chrono::milliseconds(50), [&] { loop->stop(); });
    ASSERT_TRUE(loop->run().ok());
    EXPECT_EQ(calls, 1);
    for (int fd : { a[0], a[1], b[0], b[1] })
        ::close(fd);
}

TEST(VmResources, RootDriveGoesFirstAndOnTheCommandLine)
{
    char dir_template[] = "/tmp/vessel-res-XXXXXX";
    std::string dir = ::mkdtemp(dir_template);
    std::string kernel = dir + "/k", a = dir + "/a.img", b = dir + "/b.img";
    for (auto& f : { kernel, a, b }) {
        int fd = ::open(f.c_str(), O_CREAT | O_WRONLY, 0644);
        ASSERT_GE(fd, 0);
        ::close(fd);
    }
    VmResources r;
    EXPECT_FALSE(r.build().ok()) << "no kernel yet";
    ASSERT_TRUE(r.set_boot_source({ kernel, std::nullopt, std::string("console=ttyS0") }).ok());
    DiskConfig data;
    data.id = "data";
    data.path = a;
    ASSERT_TRUE(r.set_drive(data).ok());
    DiskConfig root;
    root.id = "rootfs";
    root.path = b;
    root.root = true;
    root.read_only = true;
    ASSERT_TRUE(r.set_drive(root).ok());
    auto config = r.build();
    ASSERT_TRUE(config.ok()) << config.error().message();
    ASSERT_EQ(config->disks.size(), 2u);
    EXPECT_EQ(config->disks[0].id, "rootfs") << "the root drive is /dev/vda";
    EXPECT_EQ(config->cmdline, "console=ttyS0 root=/dev/vda ro");
    root.partuuid = "0eaa91a0-01";
    root.read_only = false;
    ASSERT_TRUE(r.set_drive(root).ok());
    EXPECT_EQ(r.build()->cmdline, "console=ttyS0 root=PARTUUID=0eaa91a0-01 rw");
    EXPECT_EQ(r.config().on_reset, ResetAction::Exit) << "an API VM ends when the guest resets";
    for (auto& f : { kernel, a, b })
        ::unlink(f.c_str());
    ::rmdir(dir.c_str());
}
