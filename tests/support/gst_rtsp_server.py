#!/usr/bin/python3
"""Independent GStreamer RTSP server used by rtsnap's interop tests.

Serves recorded H.264 / H.265 Annex B fixtures (fixtures/*.h264, *.h265, see
fixtures/README.md) or a live MJPEG test pattern over RTSP like a live IP camera:

  /ch1 .. /chN                 and   /unicast/c1/s0/live .. /unicast/cN/s0/live

Each mount is its own shared live media, one of
  H.264:  appsrc (is-live, format=time, video/x-h264 byte-stream/au) ! h264parse
            ! rtph264pay name=pay0 pt=96 config-interval=-1
  H.265:  appsrc (is-live, format=time, video/x-h265 byte-stream/au) ! h265parse
            ! rtph265pay name=pay0 pt=96 config-interval=-1
  MJPEG:  videotestsrc is-live=true pattern=smpte
            ! video/x-raw,format=I420,width=640,height=360,framerate=5/1 ! timeoverlay
            ! jpegenc quality=85 ! rtpjpegpay name=pay0 pt=26
For fixtures, the access units (split at AUD NALs -- H.264 type 9, H.265 type 35;
PTS/keyframe flags from the <fixture>.pts sidecar when present) are pushed paced
in real time, looping forever with continuously increasing timestamps.  For
shared live media the pipeline (and the feeder) starts when the first client
DESCRIBEs the mount and is torn down when the last client leaves.

The codec is chosen per fixture: H.265 if the file name ends in .h265/.hevc or
the .pts sidecar header says codec=hevc, else H.264.  The special fixture name
"mjpeg" selects the live MJPEG source; --mjpeg makes every mount MJPEG.  With
several --fixture options, channel i (1-based) gets fixture (i-1) mod n, e.g.
  --channels 3 --fixture a.h264 --fixture b.h265 --fixture mjpeg
serves H.264 on ch1, H.265 on ch2 and MJPEG on ch3.

Usage (Debian's python3 with gi / gir1.2-gst-rtsp-server-1.0):
  tests/support/gst_rtsp_server.py --port 8554 (--fixture FILE|mjpeg ... | --mjpeg) \
      [--channels N] [--address 127.0.0.1] [--user U --password P]

--port 0 picks a free port.  When listening, prints exactly one line
"READY rtsp://ADDRESS:PORT" to stdout (flushed).  SIGTERM/SIGINT exit cleanly (rc 0).
The listening socket is bound with SO_REUSEADDR (GstRTSPServer does that), so a
new instance can listen on the same explicit --port right after the old one exited.
With --user/--password, HTTP Basic auth is required on every mount; missing or
wrong credentials get "401 Unauthorized".  Both RTP/AVP/TCP (interleaved) and
RTP/AVP (UDP unicast, bound to --address) transports are allowed unless
--protocols tcp|udp restricts them (a UDP-only server answers 461 to a SETUP
over TCP).
"""

import argparse
import os
import re
import signal
import sys
import threading
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

START_RE = re.compile(b"\x00\x00\x01")
TICKS = 90000  # .pts sidecar clock
MJPEG = "mjpeg"  # pseudo fixture: live MJPEG test pattern


def nal_type(codec, byte0):
    # H.264: 1-byte NAL header, type = low 5 bits; H.265: 2-byte header, type = bits 1..6
    return (byte0 >> 1) & 0x3F if codec == "hevc" else byte0 & 0x1F


AUD_TYPE = {"h264": 9, "hevc": 35}


def is_key_type(codec, t):
    return 16 <= t <= 23 if codec == "hevc" else t == 5  # IRAP / IDR


def sidecar_path(path):
    return os.path.splitext(path)[0] + ".pts"


def detect_codec(path):
    ext = os.path.splitext(path)[1].lower()
    if ext in (".h265", ".hevc", ".265"):
        return "hevc"
    side = sidecar_path(path)
    if os.path.exists(side):
        with open(side) as f:
            first = f.readline()
        if first.startswith("#"):
            m = re.search(r"\bcodec=(\S+)", first)
            if m and m.group(1).lower() in ("hevc", "h265"):
                return "hevc"
    return "h264"


def log(msg):
    print(f"[gst_rtsp_server] {msg}", file=sys.stderr, flush=True)


class Fixture:
    """Access units of one Annex B file plus timing (in nanoseconds)."""

    def __init__(self, path):
        self.path = path
        self.codec = detect_codec(path)
        data = open(path, "rb").read()
        aud = AUD_TYPE[self.codec]
        starts = [m.start() for m in START_RE.finditer(data)
                  if m.end() < len(data) and nal_type(self.codec, data[m.end()]) == aud]
        if not starts:
            raise SystemExit(f"{path}: no {self.codec} AUD NALs (type {aud}) found; "
                             "cannot split access units")
        # include the leading zero of a 4-byte start code in the AU that it starts
        starts = [s - 1 if s > 0 and data[s - 1] == 0 else s for s in starts]
        starts[0] = 0
        self.aus = [data[a:b] for a, b in zip(starts, starts[1:] + [len(data)])]
        n = len(self.aus)

        fps_num, fps_den = 25, 1
        pts_ticks = None
        keys = None
        side = sidecar_path(path)
        if os.path.exists(side):
            pts_ticks, keys = [], []
            for line in open(side):
                if line.startswith("#"):
                    m = re.search(r"fps=(\d+)/(\d+)", line)
                    if m:
                        fps_num, fps_den = int(m.group(1)), int(m.group(2))
                    continue
                if line.strip():
                    p, k = line.split()
                    pts_ticks.append(int(p))
                    keys.append(k == "1")
            if len(pts_ticks) != n:
                raise SystemExit(f"{side}: {len(pts_ticks)} lines but {n} access units")
        self.fps = (fps_num, fps_den)
        self.frame_ns = Gst.util_uint64_scale(Gst.SECOND, fps_den, fps_num)
        if pts_ticks is None:
            # no sidecar: assume decode order == display order
            self.pts_ns = [i * self.frame_ns for i in range(n)]
            self.keys = [self._has_key(au) for au in self.aus]
        else:
            self.pts_ns = [Gst.util_uint64_scale(p, Gst.SECOND, TICKS) for p in pts_ticks]
            self.keys = keys
        self.dts_ns = [i * self.frame_ns for i in range(n)]
        # reorder delay so that PTS >= DTS for B-frame streams
        self.delay_ns = max(0, max(d - p for d, p in zip(self.dts_ns, self.pts_ns)))
        self.loop_ns = n * self.frame_ns
        log(f"{path}: {self.codec}, {n} AUs, {sum(self.keys)} keyframes, fps {fps_num}/{fps_den}, "
            f"reorder delay {self.delay_ns / 1e6:.0f} ms")

    def _has_key(self, au):
        return any(is_key_type(self.codec, nal_type(self.codec, au[m.end()]))
                   for m in START_RE.finditer(au) if m.end() < len(au))


class Feeder(threading.Thread):
    """Pushes a fixture into one media's appsrc in real time, looping forever."""

    def __init__(self, fixture, appsrc, name):
        super().__init__(daemon=True, name=f"feeder-{name}")
        self.fx = fixture
        self.src = appsrc
        self.stop_ev = threading.Event()
        self.mount = name

    def stop(self):
        self.stop_ev.set()

    def run(self):
        src, fx = self.src, self.fx
        # wait until the (live) media pipeline is PLAYING, so that clock/base time exist
        while not self.stop_ev.is_set():
            clock = src.get_clock()
            if clock is not None and src.get_state(0)[1] == Gst.State.PLAYING:
                break
            time.sleep(0.005)
        else:
            return
        base_time = src.get_base_time()
        start_rt = clock.get_time() - base_time  # running time of our first AU
        log(f"{self.mount}: feeder started")
        loop = 0
        n = len(fx.aus)
        while not self.stop_ev.is_set():
            for i in range(n):
                if self.stop_ev.is_set():
                    break
                off = start_rt + loop * fx.loop_ns
                dts = off + fx.dts_ns[i]
                pts = off + fx.delay_ns + fx.pts_ns[i]
                wait = (base_time + dts) - clock.get_time()
                if wait > 0:
                    if self.stop_ev.wait(wait / Gst.SECOND):
                        break
                buf = Gst.Buffer.new_wrapped(fx.aus[i])
                buf.pts = pts
                buf.dts = dts
                buf.duration = fx.frame_ns
                if not fx.keys[i]:
                    buf.set_flags(Gst.BufferFlags.DELTA_UNIT)
                if loop > 0 and i == 0:
                    buf.set_flags(Gst.BufferFlags.DISCONT)
                ret = src.emit("push-buffer", buf)
                if ret != Gst.FlowReturn.OK:
                    log(f"{self.mount}: push-buffer -> {ret.value_nick}, feeder stopping")
                    self.stop_ev.set()
                    break
            loop += 1
        log(f"{self.mount}: feeder stopped")


MJPEG_LAUNCH = (
    "( videotestsrc is-live=true pattern=smpte "
    "! video/x-raw,format=I420,width=640,height=360,framerate=5/1 {overlay}"
    "! jpegenc quality=85 ! rtpjpegpay name=pay0 pt=26 )")


class MjpegFactory(GstRtspServer.RTSPMediaFactory):
    """Live MJPEG test pattern (no feeder thread: videotestsrc is the live source)."""

    def __init__(self, mount, timeoverlay=True):
        super().__init__()
        self.mount = mount
        self.set_launch(MJPEG_LAUNCH.format(overlay="! timeoverlay " if timeoverlay else ""))
        self.set_shared(True)


class Factory(GstRtspServer.RTSPMediaFactory):
    def __init__(self, fixture, mount, feeders):
        super().__init__()
        self.fx = fixture
        self.mount = mount
        self.feeders = feeders
        num, den = fixture.fps
        enc = "h265" if fixture.codec == "hevc" else "h264"
        self.set_launch(
            "( appsrc name=src is-live=true format=time do-timestamp=false block=false "
            f"caps=video/x-{enc},stream-format=byte-stream,alignment=au,framerate={num}/{den} "
            f"! {enc}parse ! rtp{enc}pay name=pay0 pt=96 config-interval=-1 )")
        self.set_shared(True)
        self.connect("media-configure", self._on_media_configure)

    def _on_media_configure(self, _factory, media):
        appsrc = media.get_element().get_child_by_name("src")
        feeder = Feeder(self.fx, appsrc, self.mount)
        self.feeders.add(feeder)

        def on_unprepared(_media):
            feeder.stop()
            self.feeders.discard(feeder)
            log(f"{self.mount}: media unprepared")

        media.connect("unprepared", on_unprepared)
        feeder.start()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True, help="TCP port (0 = pick a free one)")
    ap.add_argument("--address", default="127.0.0.1")
    ap.add_argument("--fixture", action="append", default=[],
                    help="Annex B .h264 or .h265/.hevc file (codec per file), or 'mjpeg' for "
                         "the live MJPEG source; repeat to assign to channels round-robin")
    ap.add_argument("--mjpeg", action="store_true",
                    help="serve a live MJPEG test pattern (640x360, 5 fps) on every mount, "
                         "ignoring --fixture")
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--user")
    ap.add_argument("--password")
    ap.add_argument("--protocols", choices=["all", "tcp", "udp"], default="all",
                    help="lower transports offered: 'udp' answers SETUP over TCP with "
                         "461 Unsupported Transport, like UDP-only cameras and relays")
    args = ap.parse_args()
    if (args.user is None) != (args.password is None):
        ap.error("--user and --password go together")
    if args.mjpeg:
        args.fixture = [MJPEG]
    if not args.fixture:
        ap.error("give --fixture (one or more) or --mjpeg")
    if args.channels < 1:
        ap.error("--channels must be >= 1")

    Gst.init(None)
    fixtures = [MJPEG if p == MJPEG else Fixture(p) for p in args.fixture]
    need = {"appsrc"}
    for fx in fixtures:
        if fx == MJPEG:
            need |= {"videotestsrc", "jpegenc", "rtpjpegpay"}
        elif fx.codec == "hevc":
            need |= {"h265parse", "rtph265pay"}
        else:
            need |= {"h264parse", "rtph264pay"}
    for el in sorted(need):
        if Gst.ElementFactory.find(el) is None:
            raise SystemExit(f"GStreamer element {el} not available")
    timeoverlay = Gst.ElementFactory.find("timeoverlay") is not None
    if MJPEG in fixtures and not timeoverlay:
        log("timeoverlay not available (gstreamer1.0-plugins-base pango); MJPEG without clock")

    server = GstRtspServer.RTSPServer()
    server.set_address(args.address)
    server.set_service(str(args.port))

    # keep UDP unicast transport on the listening address (not 0.0.0.0)
    pool = GstRtspServer.RTSPAddressPool()
    pool.add_range(args.address, args.address, 40000, 60000, 0)

    permissions = None
    if args.user is not None:
        auth = GstRtspServer.RTSPAuth()
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.BASIC)
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", args.user)
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
        server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        permissions.add_permission_for_role(args.user, "media.factory.access", True)
        permissions.add_permission_for_role(args.user, "media.factory.construct", True)

    protocols = {
        "all": GstRtsp.RTSPLowerTrans.TCP | GstRtsp.RTSPLowerTrans.UDP,
        "tcp": GstRtsp.RTSPLowerTrans.TCP,
        "udp": GstRtsp.RTSPLowerTrans.UDP,
    }[args.protocols]
    feeders = set()
    mounts = server.get_mount_points()
    for ch in range(1, args.channels + 1):
        fx = fixtures[(ch - 1) % len(fixtures)]
        for path in (f"/ch{ch}", f"/unicast/c{ch}/s0/live"):
            f = MjpegFactory(path, timeoverlay) if fx == MJPEG else Factory(fx, path, feeders)
            f.set_protocols(protocols)
            f.set_address_pool(pool)
            if permissions is not None:
                f.set_permissions(permissions)
            mounts.add_factory(path, f)

    loop = GLib.MainLoop()
    if server.attach(None) == 0:
        raise SystemExit(f"could not listen on {args.address}:{args.port}")
    port = server.get_bound_port()

    def quit_(*_):
        log("signal received, shutting down")
        loop.quit()
        return GLib.SOURCE_REMOVE

    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGTERM, quit_)
    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGINT, quit_)

    print(f"READY rtsp://{args.address}:{port}", flush=True)
    loop.run()
    for fd in list(feeders):
        fd.stop()
    sys.stdout.flush()
    # skip interpreter/GStreamer teardown of live pipelines (can hang in finalizers)
    os._exit(0)


if __name__ == "__main__":
    main()
