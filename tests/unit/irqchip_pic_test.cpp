#include <gtest/gtest.h>

#include <vector>

#include "devices/irqchip/pic.h"
#include "irqchip_test_support.h"

using namespace vessel;
using namespace vessel::irqchip_test;

namespace {

constexpr uint16_t kMasterCmd = 0x20;
constexpr uint16_t kMasterImr = 0x21;
constexpr uint16_t kSlaveCmd = 0xa0;
constexpr uint16_t kSlaveImr = 0xa1;
constexpr uint8_t kReadIsr = 0x0b;
constexpr uint8_t kReadIrr = 0x0a;
constexpr uint8_t kNonSpecificEoi = 0x20;

// The PIC on the port bus with its INT output recorded. Drives lines through the Pic directly.
class PicHarness : public ChipHarness {
public:
    PicHarness()
        : ChipHarness(0)
    {
        chip.pic().set_output_handler([this](bool intr) { outputs.push_back(intr); });
        init_pic_like_linux();
    }
    Pic& pic() { return chip.pic(); }
    uint8_t master_isr()
    {
        outb(kMasterCmd, kReadIsr);
        return inb(kMasterCmd);
    }
    uint8_t slave_isr()
    {
        outb(kSlaveCmd, kReadIsr);
        return inb(kSlaveCmd);
    }
    uint8_t master_irr()
    {
        outb(kMasterCmd, kReadIrr);
        return inb(kMasterCmd);
    }
    void pulse(unsigned line)
    {
        pic().set_irq(line, true);
        pic().set_irq(line, false);
    }

    std::vector<bool> outputs;
};

} // namespace

TEST(Pic, PowerOnMasksEveryLine)
{
    ChipHarness h(0);
    EXPECT_EQ(h.inb(kMasterImr), 0xff);
    EXPECT_EQ(h.inb(kSlaveImr), 0xff);
    h.chip.pic().set_irq(4, true);
    EXPECT_FALSE(h.chip.pic().interrupt_pending());
}

TEST(Pic, LinuxInitSequenceThenInterrupt)
{
    PicHarness h;
    // Linux's probe: the mask written reads back.
    EXPECT_EQ(h.inb(kMasterImr), 0xff);
    EXPECT_EQ(h.inb(kSlaveImr), 0xff);
    h.outb(kMasterImr, 0xfd); // unmask IRQ1
    EXPECT_EQ(h.inb(kMasterImr), 0xfd);
    EXPECT_FALSE(h.pic().interrupt_pending());

    h.pulse(1);
    EXPECT_TRUE(h.pic().interrupt_pending());
    EXPECT_EQ(h.outputs, (std::vector<bool> { true }));
    EXPECT_EQ(h.master_irr(), 0x02); // the edge is latched after the line dropped
    EXPECT_EQ(h.pic().acknowledge(), 0x31);
    EXPECT_FALSE(h.pic().interrupt_pending());
    EXPECT_EQ(h.master_irr(), 0x00);
    EXPECT_EQ(h.master_isr(), 0x02);
    h.outb(kMasterCmd, kNonSpecificEoi);
    EXPECT_EQ(h.master_isr(), 0x00);
    EXPECT_EQ(h.outputs, (std::vector<bool> { true, false }));
}

TEST(Pic, MaskedRequestWaitsInIrr)
{
    PicHarness h;
    h.pulse(3);
    EXPECT_FALSE(h.pic().interrupt_pending());
    EXPECT_EQ(h.master_irr(), 0x08);
    h.outb(kMasterImr, 0xf7);
    EXPECT_TRUE(h.pic().interrupt_pending());
    EXPECT_EQ(h.pic().acknowledge(), 0x33);
}

TEST(Pic, FixedPrioritiesAndNesting)
{
    PicHarness h;
    h.outb(kMasterImr, 0x00);
    h.pulse(3);
    h.pulse(1);
    EXPECT_EQ(h.pic().acknowledge(), 0x31); // lower IR number first
    // IR3 is lower priority than IR1 in service.
    EXPECT_FALSE(h.pic().interrupt_pending());
    // IR0 preempts IR1.
    h.pulse(0);
    EXPECT_TRUE(h.pic().interrupt_pending());
    EXPECT_EQ(h.pic().acknowledge(), 0x30);
    EXPECT_EQ(h.master_isr(), 0x03);
    h.outb(kMasterCmd, 0x60); // specific EOI IR0
    EXPECT_EQ(h.master_isr(), 0x02);
    EXPECT_FALSE(h.pic().interrupt_pending());
    h.outb(kMasterCmd, kNonSpecificEoi); // clears IR1, the highest in service
    EXPECT_TRUE(h.pic().interrupt_pending());
    EXPECT_EQ(h.pic().acknowledge(), 0x33);
}

TEST(Pic, CascadeThroughIr2)
{
    PicHarness h;
    h.outb(kMasterImr, 0xfb); // cascade unmasked
    h.outb(kSlaveImr, 0xfb); // IRQ10 unmasked
    h.pulse(10);
    EXPECT_TRUE(h.pic().interrupt_pending());
    EXPECT_EQ(h.pic().acknowledge(), 0x3a);
    EXPECT_EQ(h.master_isr(), 0x04);
    EXPECT_EQ(h.slave_isr(), 0x04);
    EXPECT_FALSE(h.pic().interrupt_pending());
    // Linux's EOI for a slave IRQ: specific EOI to the slave, then to IR2 of the master.
    h.outb(kSlaveCmd, 0x62);
    h.outb(kMasterCmd, 0x62);
    EXPECT_EQ(h.master_isr(), 0x00);
    EXPECT_EQ(h.slave_isr(), 0x00);
}

TEST(Pic, SlaveRequestsQueueBehindEachOther)
{
    PicHarness h;
    h.outb(kMasterImr, 0xfb);
    h.outb(kSlaveImr, 0x00);
    h.pulse(12);
    h.pulse(9);
    EXPECT_EQ(h.pic().acknowledge(), 0x39);
    h.outb(kSlaveCmd, kNonSpecificEoi);
    h.outb(kMasterCmd, kNonSpecificEoi);
    EXPECT_TRUE(h.pic().interrupt_pending());
    EXPECT_EQ(h.pic().acknowledge(), 0x3c);
}

TEST(Pic, LevelLinesFollowTheElcr)
{
    PicHarness h;
    // Only the maskable bits stick: never IRQ0-2 on the master, IRQ8 / IRQ13 on the slave.
    h.outb(0x4d0, 0xff);
    h.outb(0x4d1, 0xff);
    EXPECT_EQ(h.inb(0x4d0), 0xf8);
    EXPECT_EQ(h.inb(0x4d1), 0xde);
    h.outb(0x4d0, 0x20); // IRQ5 level
    h.outb(0x4d1, 0x00);
    h.outb(kMasterImr, 0x00);

    // Level: requests again after EOI while the line stays high; stops when it drops.
    h.pic().set_irq(5, true);
    EXPECT_EQ(h.pic().acknowledge(), 0x35);
    EXPECT_FALSE(h.pic().interrupt_pending());
    h.outb(kMasterCmd, kNonSpecificEoi);
    EXPECT_TRUE(h.pic().interrupt_pending());
    h.pic().set_irq(5, false);
    EXPECT_FALSE(h.pic().interrupt_pending());

    // Edge: one request per rising edge, however long the line stays high.
    h.pic().set_irq(4, true);
    EXPECT_EQ(h.pic().acknowledge(), 0x34);
    h.outb(kMasterCmd, kNonSpecificEoi);
    EXPECT_FALSE(h.pic().interrupt_pending());
    h.pic().set_irq(4, true);
    EXPECT_FALSE(h.pic().interrupt_pending());
    h.pic().set_irq(4, false);
    h.pic().set_irq(4, true);
    EXPECT_TRUE(h.pic().interrupt_pending());
}

TEST(Pic, SpuriousIrq7WhenTheRequestVanishes)
{
    PicHarness h;
    h.outb(0x4d0, 0x20);
    h.outb(kMasterImr, 0x00);
    h.pic().set_irq(5, true);
    EXPECT_TRUE(h.pic().interrupt_pending());
    h.pic().set_irq(5, false); // gone before the INTA
    EXPECT_EQ(h.pic().acknowledge(), 0x37);
    EXPECT_EQ(h.master_isr(), 0x00); // a spurious IRQ7 sets no ISR bit
}

TEST(Pic, WithdrawnSlaveRequestWithdrawsTheCascade)
{
    PicHarness h;
    h.outb(0x4d1, 0x02); // IRQ9 level
    h.outb(kMasterImr, 0x00);
    h.outb(kSlaveImr, 0x00);
    h.pic().set_irq(9, true);
    EXPECT_TRUE(h.pic().interrupt_pending());
    h.pic().set_irq(9, false);
    // The cascade input follows the slave's INT as a level: the master's request goes too, and
    // a late INTA is a master spurious IRQ7 with no ISR bit set on either chip.
    EXPECT_FALSE(h.pic().interrupt_pending());
    EXPECT_EQ(h.pic().acknowledge(), 0x37);
    EXPECT_EQ(h.master_isr(), 0x00);
    EXPECT_EQ(h.slave_isr(), 0x00);
}

TEST(Pic, AutoEoiLeavesIsrClear)
{
    PicHarness h;
    h.outb(kMasterCmd, 0x11);
    h.outb(kMasterImr, 0x30);
    h.outb(kMasterImr, 0x04);
    h.outb(kMasterImr, 0x03); // 8086 mode, auto-EOI
    h.outb(kMasterImr, 0x00);
    h.pulse(6);
    EXPECT_EQ(h.pic().acknowledge(), 0x36);
    EXPECT_EQ(h.master_isr(), 0x00);
    h.pulse(7);
    EXPECT_EQ(h.pic().acknowledge(), 0x37); // not blocked by an in-service IR6
}

TEST(Pic, PollCommandActsAsInta)
{
    PicHarness h;
    h.outb(kMasterImr, 0x00);
    h.pulse(4);
    h.outb(kMasterCmd, 0x0c); // OCW3 poll
    EXPECT_EQ(h.inb(kMasterCmd), 0x84);
    EXPECT_EQ(h.master_isr(), 0x10);
    h.outb(kMasterCmd, 0x0c);
    EXPECT_EQ(h.inb(kMasterCmd), 0x00); // nothing left
}

TEST(Pic, RotationAndSetPriority)
{
    PicHarness h;
    h.outb(kMasterImr, 0x00);
    h.outb(kMasterCmd, 0xc4); // set priority: IR4 lowest, IR5 highest
    h.pulse(1);
    h.pulse(6);
    EXPECT_EQ(h.pic().acknowledge(), 0x36);
    h.outb(kMasterCmd, 0xa0); // rotate on non-specific EOI: IR6 becomes lowest
    EXPECT_EQ(h.master_isr(), 0x00);
    h.pulse(6);
    EXPECT_EQ(h.pic().acknowledge(), 0x31); // IR7 is now highest, then IR0, IR1 ...
}

TEST(Pic, ReinitialisationClearsStateButKeepsLevelRequests)
{
    PicHarness h;
    h.outb(0x4d0, 0x08); // IRQ3 level
    h.outb(kMasterImr, 0x00);
    h.pic().set_irq(3, true);
    h.pulse(4);
    EXPECT_EQ(h.pic().acknowledge(), 0x33);
    h.init_pic_like_linux();
    EXPECT_EQ(h.master_isr(), 0x00);
    EXPECT_EQ(h.master_irr(), 0x08); // the level line still requests; the IRQ4 edge is gone
    EXPECT_EQ(h.inb(kMasterImr), 0xff);
}
