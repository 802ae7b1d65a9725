/*
 * t_ioevent: IO events (ioeventfds) with every datamatch width.
 *
 * Port 0x600 matches the byte 0x42, 0x602 the word 0x1234, 0x604 the dword
 * 0x89abcdef, 0x606 any write; MMIO 0x40000 matches the qword
 * 0x0123456789abcdef. The guest writes a wrong value (or the right value at
 * the wrong width) and then the right one to each; at the checkpoint on port
 * 0x610 the plugin checks that each eventfd counted exactly the matching
 * writes. It then destroys the 0x600 event and reserves the port instead:
 * the guest's next write there arrives as an ordinary IO access.
 */
#include "testlib.h"

#define CHECKPOINT_PORT 0x610

static const uint8_t code[] = {
    0xba, 0x00, 0x06,                        /* 1000: mov dx, 0x600 */
    0xb0, 0x41,                              /* 1003: mov al, 0x41  ; 1-byte datamatch 0x42: no match */
    0xee,                                    /* 1005: out dx, al */
    0xb0, 0x42,                              /* 1006: mov al, 0x42  ; match */
    0xee,                                    /* 1008: out dx, al */
    0xba, 0x02, 0x06,                        /* 1009: mov dx, 0x602 */
    0xb8, 0x35, 0x12,                        /* 100c: mov ax, 0x1235  ; 2-byte datamatch 0x1234: no match */
    0xef,                                    /* 100f: out dx, ax */
    0xb8, 0x34, 0x12,                        /* 1010: mov ax, 0x1234  ; match */
    0xef,                                    /* 1013: out dx, ax */
    0xb0, 0x34,                              /* 1014: mov al, 0x34  ; right low byte, wrong width: no match */
    0xee,                                    /* 1016: out dx, al */
    0xba, 0x04, 0x06,                        /* 1017: mov dx, 0x604 */
    0x66, 0xb8, 0xee, 0xcd, 0xab, 0x89,      /* 101a: mov eax, 0x89abcdee  ; 4-byte datamatch 0x89abcdef: no match */
    0x66, 0xef,                              /* 1020: out dx, eax */
    0x66, 0xb8, 0xef, 0xcd, 0xab, 0x89,      /* 1022: mov eax, 0x89abcdef  ; match */
    0x66, 0xef,                              /* 1028: out dx, eax */
    0xba, 0x06, 0x06,                        /* 102a: mov dx, 0x606  ; no datamatch: any write signals */
    0xee,                                    /* 102d: out dx, al */
    0xef,                                    /* 102e: out dx, ax */
    0x0f, 0x6f, 0x06, 0x60, 0x10,            /* 102f: movq mm0, [qword_match] */
    0x0f, 0x6f, 0x0e, 0x68, 0x10,            /* 1034: movq mm1, [qword_other] */
    0xb8, 0x00, 0x40,                        /* 1039: mov ax, 0x4000 */
    0x8e, 0xd8,                              /* 103c: mov ds, ax */
    0x0f, 0x7f, 0x0e, 0x00, 0x00,            /* 103e: movq [0x0], mm1  ; 8-byte MMIO datamatch: no match */
    0x0f, 0x7f, 0x06, 0x00, 0x00,            /* 1043: movq [0x0], mm0  ; match */
    0x66, 0xc7, 0x06, 0x00, 0x00, 0xef, 0xcd, 0xab, 0x89, /* 1048: mov dword [0x0], 0x89abcdef  ; 4 bytes: wrong width */
    0xba, 0x10, 0x06,                        /* 1051: mov dx, 0x610 */
    0xee,                                    /* 1054: out dx, al  ; checkpoint: the plugin counts the eventfds */
    0xba, 0x00, 0x06,                        /* 1055: mov dx, 0x600 */
    0xb0, 0x42,                              /* 1058: mov al, 0x42 */
    0xee,                                    /* 105a: out dx, al  ; after destroy: a plain (reserved) port write now */
    0xf4,                                    /* 105b: hlt */
    0x00, 0x00, 0x00, 0x00,                  /* 105c: align 8, db 0 */
    0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01, /* 1060: qword_match: dq 0x0123456789abcdef */
    0xee, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01, /* 1068: qword_other: dq 0x0123456789abcdee */
};

int main(void) {
  struct guest_mem low;
  struct crosvm *c = connect_real_mode(&low, code, sizeof(code));
  OK(crosvm_reserve_range(c, CROSVM_ADDRESS_SPACE_IOPORT, CHECKPOINT_PORT, 1));

  struct crosvm_io *ev8, *ev16, *ev32, *any, *mmio64;
  uint8_t m8[1] = {0x42};
  uint8_t m16[2] = {0x34, 0x12};
  uint8_t m32[4] = {0xef, 0xcd, 0xab, 0x89};
  uint8_t m64[8] = {0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01};
  OK(crosvm_create_io_event(c, CROSVM_ADDRESS_SPACE_IOPORT, 0x600, 1, m8, &ev8));
  OK(crosvm_create_io_event(c, CROSVM_ADDRESS_SPACE_IOPORT, 0x602, 2, m16, &ev16));
  OK(crosvm_create_io_event(c, CROSVM_ADDRESS_SPACE_IOPORT, 0x604, 4, m32, &ev32));
  OK(crosvm_create_io_event(c, CROSVM_ADDRESS_SPACE_IOPORT, 0x606, 0, NULL, &any));
  OK(crosvm_create_io_event(c, CROSVM_ADDRESS_SPACE_MMIO, 0x40000, 8, m64, &mmio64));
  struct crosvm_io *bad = NULL;
  CHECK_RC(crosvm_create_io_event(c, CROSVM_ADDRESS_SPACE_IOPORT, 0x608, 3, m32, &bad), -EINVAL);
  CHECK_RC(crosvm_create_io_event(c, 9, 0x608, 1, m8, &bad), -EINVAL);
  CHECK(bad == NULL);
  int fds[5] = {crosvm_io_event_fd(ev8), crosvm_io_event_fd(ev16), crosvm_io_event_fd(ev32),
                crosvm_io_event_fd(any), crosvm_io_event_fd(mmio64)};
  for (int i = 0; i < 5; i++) {
    CHECK(fds[i] >= 0);
    for (int j = 0; j < i; j++) CHECK(fds[i] != fds[j]);
  }

  struct crosvm_vcpu *vcpu = start_real_mode(c);
  struct crosvm_vcpu_event evt;

  wait_io(vcpu, &evt, CROSVM_ADDRESS_SPACE_IOPORT, CHECKPOINT_PORT, true, 1);
  static const char *names[5] = {"port 1-byte", "port 2-byte", "port 4-byte", "port any",
                                 "mmio 8-byte"};
  static const uint64_t want[5] = {1, 1, 1, 2, 1};
  for (int i = 0; i < 5; i++) {
    uint64_t n = eventfd_wait(fds[i], 0);
    if (n != want[i]) FAIL("%s io event counted %llu, wanted %llu", names[i],
                           (unsigned long long)n, (unsigned long long)want[i]);
  }

  OK(crosvm_destroy_io_event(c, &ev8));
  CHECK(ev8 == NULL);
  OK(crosvm_reserve_range(c, CROSVM_ADDRESS_SPACE_IOPORT, 0x600, 1));
  OK(crosvm_vcpu_resume(vcpu));
  wait_io(vcpu, &evt, CROSVM_ADDRESS_SPACE_IOPORT, 0x600, true, 1);
  CHECK(io_value(&evt) == 0x42);

  OK(crosvm_destroy_io_event(c, &ev16));
  OK(crosvm_destroy_io_event(c, &ev32));
  OK(crosvm_destroy_io_event(c, &any));
  OK(crosvm_destroy_io_event(c, &mmio64));
  return finish_test(c, &low, "ioevent");
}
