"""What the Redis measurement scripts of bench/ share: a redis-server of their own on a free loopback port, RESP for `redis-cli --pipe`, Redis's CPU and `commandstats` counters, and the store's scripts as scripts.rs builds them."""
import base64, os, re, socket, subprocess, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PORT = free_port()


def cli(*args):
    return subprocess.run(["redis-cli", "-p", str(PORT)] + list(args),
                          capture_output=True).stdout.decode("latin-1")


def pipe(data):
    """Sends RESP-encoded commands through `redis-cli --pipe`."""
    subprocess.run(["redis-cli", "-p", str(PORT), "--pipe"], input=data, capture_output=True)


def start():
    """A redis-server on PORT without persistence, answering; stop it with stop()."""
    server = subprocess.Popen(["redis-server", "--port", str(PORT), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    for _ in range(100):
        if cli("PING").strip() == "PONG":
            break
        time.sleep(0.05)
    return server


def stop(server):
    server.terminate()
    server.wait()


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a.encode("latin-1") if isinstance(a, str) else a
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def tag():
    """A random 256-bit hash tag, as a session id's."""
    return base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()


def stats():
    """`INFO commandstats` time per command (µs) and Redis's CPU seconds so far."""
    usec = {}
    for line in cli("INFO", "commandstats").splitlines():
        m = re.match(r"cmdstat_([^:]+):calls=(\d+),usec=(\d+)", line)
        if m:
            usec[m.group(1)] = int(m.group(3))
    cpu = cli("INFO", "cpu")
    used = sum(float(re.search(k + r":([\d.]+)", cpu).group(1)) for k in ("used_cpu_user", "used_cpu_sys"))
    return usec, used


def script_from_source(name):
    """The script `name` as crates/sessionkit-redis/src/scripts.rs builds it (concat! of raw strings and macros)."""
    src = open(os.path.join(ROOT, "crates/sessionkit-redis/src/scripts.rs")).read()
    macros = {m.group(1): m.group(2) for m in re.finditer(
        r'macro_rules! (lua_\w+) \{\s*\(\) => \{\s*r"(.*?)"\s*\};\s*\}', src, re.S)}
    composite = {m.group(1): m.group(2) for m in re.finditer(
        r'macro_rules! (lua_\w+) \{\s*\(\) => \{\s*concat!\((.*?)\)\s*\};\s*\}', src, re.S)}

    def expand(body):
        out = []
        for p in re.finditer(r'(lua_\w+)!\(\)|r"(.*?)"', body, re.S):
            if p.group(1) in composite:
                out.append(expand(composite[p.group(1)]))
            elif p.group(1):
                out.append(macros[p.group(1)])
            else:
                out.append(p.group(2))
        return "".join(out)

    body = re.search(r'pub\(crate\) static ' + name + r'\b.*?concat!\((.*?)\)\)\s*\}\);', src, re.S).group(1)
    return expand(body)
