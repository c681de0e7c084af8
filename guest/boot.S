/*
 * Multiboot v1 entry for the Drover test guest.
 *
 * QEMU's `-kernel` loads this 32-bit ELF, enters `_start` in flat 32-bit protected mode with
 * paging off, EAX = 0x2BADB002 and EBX = the physical address of the multiboot info block
 * (which holds the -append command line and the memory size). We set up a stack and call
 * guest_main(magic, info) in guest.c; it never returns.
 */
#define MB_MAGIC 0x1BADB002
#define MB_FLAGS 0x00000003 /* bit 0: page-align modules, bit 1: give us mem_lower/mem_upper */

	.section .multiboot, "a"
	.align 4
	.long MB_MAGIC
	.long MB_FLAGS
	.long -(MB_MAGIC + MB_FLAGS)

	.section .bss
	.align 16
stack_bottom:
	.skip 16384
stack_top:

	.section .data
	.align 8
/* Our own flat GDT (multiboot leaves GDTR undefined): null, code 0x08, data 0x10. */
gdt:
	.quad 0
	.quad 0x00CF9A000000FFFF
	.quad 0x00CF92000000FFFF
gdt_ptr:
	.word gdt_ptr - gdt - 1
	.long gdt

	.section .text
	.global _start
_start:
	cli
	lgdt gdt_ptr
	ljmp $0x08, $1f
1:	mov $0x10, %cx
	mov %cx, %ds
	mov %cx, %es
	mov %cx, %fs
	mov %cx, %gs
	mov %cx, %ss
	mov $stack_top, %esp
	push %ebx /* multiboot info */
	push %eax /* magic */
	call guest_main
1:	hlt
	jmp 1b

/* IRQ0 (PIT, remapped to vector 0x20): count a millisecond and acknowledge the PIC. */
	.global irq0_entry
irq0_entry:
	push %eax
	incl irq_ticks
	mov $0x20, %al
	outb %al, $0x20
	pop %eax
	iret

/* Spurious/other PIC vectors: nothing to do. */
	.global irq_ignore
irq_ignore:
	iret

/* CPU exceptions: say '!' on COM1 and stop (the host sees the heartbeat end). */
	.global exc_entry
exc_entry:
	cli
	mov $0x3f8, %dx
	mov $'!', %al
	outb %al, %dx
2:	hlt
	jmp 2b

	.section .note.GNU-stack, "", @progbits
