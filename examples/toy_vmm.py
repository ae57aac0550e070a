#!/usr/bin/env python3
"""A toy VMM around `vfio-migrate` (used by examples/vmm-handoff.sh).

It plays what QEMU or Cloud Hypervisor would do: it owns the guest's RAM (a
memfd), spawns the transport with that memfd inherited (`--memory fd:N`),
drives the control socket (QMP-shaped JSON lines, docs/EVENTS.md), hands over
descriptors with SCM_RIGHTS, and answers the transport's requests.

  source:      toy_vmm.py src SOCKET FINAL_COPY MIB -- COMMAND...
    a "vCPU" thread keeps writing guest pages and logging them; the bitmap
    memfd goes over with dirty-log-setup; each dirty-sync gets the pages
    written since the last one; stop-guest pauses the vCPU. When the transport
    has exited (devices stopped, vCPU paused: nothing writes any more) the
    memory is saved to FINAL_COPY.
  destination: toy_vmm.py dst SOCKET FINAL_COPY MIB -- COMMAND...
    empty memory; start-guest (after COMMIT) would run the guest; the memory
    is saved to FINAL_COPY when the transport has exited.

COMMAND is the vfio-migrate command line; `{memfd}` in it becomes the
inherited descriptor's number. Exits with the transport's exit code.
"""
import json, mmap, os, random, socket, subprocess, sys, threading, time

PAGE = 4096


class Control:
    """One controller connection: commands in, replies and events out."""

    def __init__(self, path, process):
        for _ in range(400):
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                if process.poll() is not None:
                    sys.exit(f"vmm: the transport exited ({process.returncode}) before its control socket appeared")
                time.sleep(0.025)
        else:
            sys.exit(f"vmm: no control socket at {path}")
        self.buffer = b""
        self.events = []
        self.greeting = self.message()

    def message(self):
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def execute(self, command, arguments=None, fd=None):
        request = {"execute": command}
        if arguments is not None:
            request["arguments"] = arguments
        data = (json.dumps(request) + "\n").encode()
        if fd is None:
            self.sock.sendall(data)
        else:  # the descriptor travels with its own request line
            socket.send_fds(self.sock, [data], [fd])
        while True:
            reply = self.message()
            if reply is None or "event" not in reply:
                break
            self.events.append(reply)
        if reply is None or "error" in reply:
            sys.exit(f"vmm: {command} refused: {reply}")
        print(f"vmm: {command} -> {json.dumps(reply['return'])}", flush=True)
        return reply["return"]

    def next_event(self):
        return self.events.pop(0) if self.events else self.message()


class GuestRAM:
    """The guest's memory, a memfd, and a vCPU that writes it while running."""

    def __init__(self, mib, fill):
        self.size = mib << 20
        self.fd = os.memfd_create("guest-ram", 0)  # no CLOEXEC: the transport inherits it
        os.ftruncate(self.fd, self.size)
        self.map = mmap.mmap(self.fd, self.size)
        if fill:
            rng = random.Random(7)
            for page in range(0, self.size // PAGE, 3):  # a third of the pages hold data, the rest zero
                self.map[page * PAGE:(page + 1) * PAGE] = rng.randbytes(PAGE)
        self.lock = threading.Lock()
        self.dirty = set()
        self.running = threading.Event()
        self.writes = 0

    def vcpu(self):
        rng = random.Random(11)
        while self.running.is_set():
            with self.lock:  # write, then log: a harvest never misses a write
                page = rng.randrange(self.size // PAGE)
                offset = page * PAGE + rng.randrange(PAGE // 8) * 8
                self.writes += 1
                self.map[offset:offset + 8] = self.writes.to_bytes(8, "little")
                self.dirty.add(page)
            time.sleep(0.0005)

    def harvest_into(self, bitmap_fd):
        """The pages written since the last harvest, as docs/EVENTS.md's bitmap."""
        words = bytearray((self.size // PAGE + 63) // 64 * 8)
        with self.lock:
            for page in self.dirty:
                words[page // 8] |= 1 << (page % 8)  # little-endian words: byte page/8, bit page%8
            count, self.dirty = len(self.dirty), set()
        os.pwrite(bitmap_fd, bytes(words), 0)
        return count

    def save(self, path):
        with open(path, "wb") as f:
            f.write(self.map[:])


def source(ctl, ram):
    pages = ram.size // PAGE
    bitmap = os.memfd_create("dirty-log", os.MFD_CLOEXEC)
    os.ftruncate(bitmap, (pages + 63) // 64 * 8)
    ram.running.set()
    vcpu = threading.Thread(target=ram.vcpu)
    vcpu.start()
    ctl.execute("dirty-log-setup", {"page-size": PAGE, "pages": pages}, fd=bitmap)  # logging starts now
    ctl.execute("start")
    while (event := ctl.next_event()) is not None:
        name, data = event["event"], event["data"]
        if name == "dirty-sync":
            count = ram.harvest_into(bitmap)
            print(f"vmm: dirty-sync {data['request']}: {count} page(s) written by the guest since the last", flush=True)
            ctl.execute("dirty-synced", {"request": data["request"]})
        elif name == "stop-guest":
            ram.running.clear()
            vcpu.join()
            print(f"vmm: guest paused after {ram.writes} writes", flush=True)
            ctl.execute("guest-stopped", {"request": data["request"]})
        elif name == "resume-guest":
            print("vmm: the migration failed before COMMIT: resuming the guest here", flush=True)
            ctl.execute("guest-resumed", {"request": data["request"]})
        elif name in ("finished", "failed"):
            print(f"vmm: transport reports {name}", flush=True)
    ram.running.clear()


def destination(ctl, ram):
    ctl.execute("start")
    while (event := ctl.next_event()) is not None:
        name, data = event["event"], event["data"]
        if name == "start-guest":
            print("vmm: COMMIT done: starting the guest here", flush=True)
            ctl.execute("guest-started", {"request": data["request"]})
        elif name in ("finished", "failed"):
            print(f"vmm: transport reports {name}", flush=True)


def main():
    role, path, output, mib = sys.argv[1:5]
    command = sys.argv[sys.argv.index("--") + 1:]
    ram = GuestRAM(int(mib), fill=(role == "src"))
    command = [a.replace("{memfd}", str(ram.fd)) for a in command]
    process = subprocess.Popen(command, pass_fds=[ram.fd])
    ctl = Control(path, process)
    (source if role == "src" else destination)(ctl, ram)
    code = process.wait()
    ram.save(output)
    sys.exit(code)


if __name__ == "__main__":
    main()
