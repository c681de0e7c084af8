/*
 * Drover test guest: a bare-metal workload whose memory behaviour a migration can be measured on.
 *
 * Command line (multiboot cmdline, i.e. QEMU -append), every key optional:
 *   profile=idle|web|db|mmuncher  access pattern: sequential sweep over the working set, except
 *                                 db: 80% of writes to the first 1/8 of it (a skewed hot set)
 *   fill=KiB   RAM filled with non-zero data at boot (pages every migration must send)
 *   wss=KiB    writable working set rewritten after the fill (starts at the fill's start)
 *   rate=KiB/s pace of working-set writes; 0 = flat out
 *   seed=N     seed of the pseudo-random choices (db)
 *   probe      print "#ready" after a 1 MiB fill and exit through isa-debug-exit (accel probe)
 *
 * Output on COM1 (0x3f8): one '.' per guest millisecond (the heartbeat: the PIT interrupts every
 * ms on QEMU's virtual clock, so it stops while the VM is paused; between beats a paced guest
 * sleeps in hlt), and lines starting with '#':
 *   "#ready <fillKiB> <wssKiB> <rateKiB/s>"  once the fill is done
 *   "#s <beats> <pagesWritten>"              every 1000 beats (the host derives the dirty rate)
 * Memory used for data: from 4 MiB up to the top of contiguous RAM reported by multiboot.
 */
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }

/* ---- serial (COM1, 16550) ---- */
#define COM1 0x3f8
static void serial_init(void) {
  outb(COM1 + 1, 0x00); /* no interrupts: we poll */
  outb(COM1 + 3, 0x80); /* DLAB on */
  outb(COM1 + 0, 0x01); /* divisor 1 = 115200 baud (QEMU does not pace output by it) */
  outb(COM1 + 1, 0x00);
  outb(COM1 + 3, 0x03); /* 8N1, DLAB off */
  outb(COM1 + 2, 0xC7); /* FIFO on, cleared */
  outb(COM1 + 4, 0x03); /* DTR, RTS */
}
static void putc_(char c) {
  /* Wait for THR empty (the host took the last byte), but not forever: a UART whose pending
   * transmit was not re-armed after a migration never empties again, and writing THR kicks
   * QEMU's transmitter. Losing one heartbeat byte is better than a guest stuck in this loop. */
  for (u32 spins = 0; spins < 20000 && !(inb(COM1 + 5) & 0x20); spins++) { }
  outb(COM1, (u8)c);
}
static void puts_(const char *s) { while (*s) putc_(*s++); }
static void putu(u32 v) {
  char buf[11]; int i = 10; buf[i] = 0;
  do { buf[--i] = (char)('0' + v % 10); v /= 10; } while (v);
  puts_(buf + i);
}

/* ---- time: PIT channel 0 interrupts every millisecond (IRQ0 → vector 0x20, boot.S counts) ---- */
#define PIT_HZ 1193182u
volatile u32 irq_ticks; /* incremented by irq0_entry */
extern void irq0_entry(void), irq_ignore(void), exc_entry(void);

struct idt_entry { u16 off_lo, sel; u8 zero, type; u16 off_hi; } __attribute__((packed));
static struct idt_entry idt[48];
static struct { u16 limit; u32 base; } __attribute__((packed)) idt_ptr;

static void idt_set(int v, void (*h)(void)) {
  u32 a = (u32)h;
  idt[v].off_lo = (u16)a; idt[v].sel = 0x08; idt[v].zero = 0; idt[v].type = 0x8E; idt[v].off_hi = (u16)(a >> 16);
}

static void timer_init(void) {
  for (int v = 0; v < 32; v++) idt_set(v, exc_entry);
  for (int v = 32; v < 48; v++) idt_set(v, irq_ignore);
  idt_set(32, irq0_entry);
  idt_ptr.limit = sizeof(idt) - 1;
  idt_ptr.base = (u32)idt;
  __asm__ volatile("lidt %0" : : "m"(idt_ptr));
  /* 8259 PICs: remap IRQ 0-15 to vectors 0x20-0x2f, unmask only IRQ0. */
  outb(0x20, 0x11); outb(0xA0, 0x11);
  outb(0x21, 0x20); outb(0xA1, 0x28);
  outb(0x21, 0x04); outb(0xA1, 0x02);
  outb(0x21, 0x01); outb(0xA1, 0x01);
  outb(0x21, 0xFE); outb(0xA1, 0xFF);
  /* PIT channel 0, mode 2 (rate generator), 1193 ticks = 1 ms (QEMU's virtual clock: stops while paused). */
  u32 div = PIT_HZ / 1000;
  outb(0x43, 0x34); outb(0x40, (u8)div); outb(0x40, (u8)(div >> 8));
  __asm__ volatile("sti");
}

/* Sleeps until the next interrupt (no lost wake-up: sti takes effect after hlt starts). */
static void idle(void) { __asm__ volatile("cli; sti; hlt"); }

/* ---- heartbeat ---- */
static u32 beats, pages_written;
/* Emits the beats that are due (one per timer interrupt; a backlog of more than 20 collapses). */
static void tick(void) {
  u32 now = irq_ticks;
  if (now - beats > 20) beats = now - 1; /* fell behind: no burst */
  while (beats != now) {
    beats++;
    putc_('.');
    if (beats % 1000 == 0) {
      puts_("\n#s "); putu(beats); putc_(' '); putu(pages_written); putc_('\n');
    }
  }
}

/* ---- command line ---- */
static int streq_n(const char *a, const char *b, int n) {
  for (int i = 0; i < n; i++) if (a[i] != b[i]) return 0;
  return 1;
}
/* Finds `key=` (or bare `key`) in cmdline; returns a pointer to its value, or 0. */
static const char *arg(const char *cmd, const char *key) {
  int n = 0; while (key[n]) n++;
  for (const char *p = cmd; p && *p; ) {
    while (*p == ' ') p++;
    if (streq_n(p, key, n) && (p[n] == '=' || p[n] == ' ' || p[n] == 0)) return p[n] == '=' ? p + n + 1 : p + n;
    while (*p && *p != ' ') p++;
  }
  return 0;
}
static u32 arg_u32(const char *cmd, const char *key, u32 dflt) {
  const char *v = arg(cmd, key);
  if (!v || *v < '0' || *v > '9') return dflt;
  u32 x = 0;
  while (*v >= '0' && *v <= '9') x = x * 10 + (u32)(*v++ - '0');
  return x;
}

struct mb_info { u32 flags, mem_lower, mem_upper, boot_device, cmdline; };

#define DATA_START (4u << 20)
#define PAGE 4096u

void guest_main(u32 magic, struct mb_info *mbi) {
  serial_init();
  timer_init();
  const char *cmd = (magic == 0x2BADB002 && (mbi->flags & 4)) ? (const char *)mbi->cmdline : "";
  u32 mem_top = (magic == 0x2BADB002 && (mbi->flags & 1)) ? (1u << 20) + mbi->mem_upper * 1024u : (64u << 20);
  int probe = arg(cmd, "probe") != 0;
  const char *prof = arg(cmd, "profile");
  int skewed = prof && streq_n(prof, "db", 2);
  u32 fill_kib = arg_u32(cmd, "fill", probe ? 1024 : 16384);
  u32 wss_kib = arg_u32(cmd, "wss", 1024);
  u32 rate = arg_u32(cmd, "rate", 0);
  u32 seed = arg_u32(cmd, "seed", 1) | 1;
  u32 avail_pages = mem_top > DATA_START ? (mem_top - DATA_START) / PAGE : 0;
  u32 fill_pages = fill_kib / 4, wss_pages = wss_kib / 4;
  if (fill_pages > avail_pages) fill_pages = avail_pages;
  if (wss_pages > avail_pages) wss_pages = avail_pages;
  volatile u32 *base = (volatile u32 *)DATA_START;

  puts_("#boot ");
  puts_(cmd);
  putc_('\n');
  /* Fill: every word of every page non-zero, beating between pages. */
  for (u32 p = 0; p < fill_pages; p++) {
    u32 *pg = (u32 *)(DATA_START + p * PAGE);
    u32 v = 0x5a5a0000u ^ p;
    u32 n = PAGE / 4;
    __asm__ volatile("cld; rep stosl" : "+D"(pg), "+c"(n) : "a"(v) : "memory");
    if ((p & 63) == 0) tick();
  }
  puts_("\n#ready "); putu(fill_pages * 4); putc_(' '); putu(wss_pages * 4); putc_(' '); putu(rate); putc_('\n');
  if (probe) {
    outb(0xf4, 0); /* isa-debug-exit: QEMU exits with status 1 */
    for (;;) __asm__ volatile("hlt");
  }

  u32 cursor = 0, version = 1, credit = 0, hot = wss_pages / 8 ? wss_pages / 8 : 1;
  u32 last_beats = beats;
  for (;;) {
    u32 todo;
    if (wss_pages == 0) { tick(); idle(); continue; }
    if (rate == 0) {
      todo = 64; /* flat out: 64 pages between clock reads */
    } else {
      tick();
      if (beats == last_beats) { idle(); continue; }
      credit += rate * (beats - last_beats); /* KiB*ms/s owed; one page = 4000 of those */
      last_beats = beats;
      todo = credit / 4000;
      credit -= todo * 4000;
    }
    while (todo) {
      u32 chunk = todo > 64 ? 64 : todo;
      todo -= chunk;
      for (u32 i = 0; i < chunk; i++) {
        u32 p;
        if (skewed) {
          seed ^= seed << 13; seed ^= seed >> 17; seed ^= seed << 5; /* xorshift32 */
          p = (seed & 0xff) < 205 ? (seed >> 8) % hot : (seed >> 8) % wss_pages;
        } else {
          p = cursor++;
          if (cursor == wss_pages) { cursor = 0; version++; }
        }
        base[p * (PAGE / 4) + (version & 1023)] = version; /* one store dirties the page */
      }
      pages_written += chunk;
      tick();
    }
  }
}
