// A live555 RTSP server for rtsnap's interop tests (tests/interop_live555.rs).
//
// It serves one H.264 Annex B fixture (fixtures/*.h264) the way a camera built
// on live555 serves its live encoder:
//
//   * LIVE and shared: one source per stream, created for the first client and
//     reused for every later one (OnDemandServerMediaSubsession with
//     reuseFirstSource = True). A client that joins while another one watches
//     gets the RTP packets from wherever the shared sink happens to be, which
//     for a 1080p stream is usually the middle of an FU-A fragmented NAL unit.
//   * looping: the file is read from memory and starts over at its end (every
//     fixture begins with AUD, SPS, PPS, IDR, so the joined stream stays valid);
//   * real-time paced: H264VideoStreamFramer stamps every access unit with a
//     duration of 1/fps, and live555's RTP sink sends at that pace.
//   * sprop-parameter-sets in the SDP, obtained like live555's own file
//     subsessions do: by running the sink until the framer has seen SPS and PPS.
//
// Usage: live555_h264_server --fixture FILE [--port N] [--fps F] [--path NAME]
//                            [--tcp-sndbuf BYTES]
// Listens on 127.0.0.1 (and ::1) only; --port 0 (the default) picks a free
// port. When listening it prints one line "READY rtsp://127.0.0.1:PORT/NAME"
// to stdout. Both RTP/AVP/TCP (interleaved) and RTP/AVP (UDP) are served.
// Built by tests/support/live555.sh (live555 is downloaded, never committed).

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "BasicUsageEnvironment.hh"
#include "GroupsockHelper.hh"
#include "liveMedia.hh"

namespace {

// The fixture's bytes, loaded once; every source reads its own position.
std::vector<unsigned char> g_stream;
double g_fps = 25.0;
// SO_SNDBUF for RTSP/RTP-over-TCP client sockets; 0 keeps live555's own
// (it asks for 50 KB, which Linux doubles).
unsigned g_tcp_sndbuf = 0;

// live555's RTSPServer, but with a larger send buffer on every client's
// TCP connection when --tcp-sndbuf is given. live555 writes a whole access
// unit's packets at once and *drops* an RTP packet whose interleaved header
// finds the socket full (RTPInterface::sendDataOverTCP), so a 190 KB IDR
// through its 100 KB default loses its tail whenever the client is not
// scheduled during that burst -- as on a busy 2-core test machine.
class TestRTSPServer : public RTSPServer {
public:
  static TestRTSPServer* createNew(UsageEnvironment& env, Port port) {
    int v4 = setUpOurSocket(env, port, AF_INET);
    int v6 = setUpOurSocket(env, port, AF_INET6);
    if (v4 < 0 && v6 < 0) return nullptr;
    return new TestRTSPServer(env, v4, v6, port);
  }

private:
  TestRTSPServer(UsageEnvironment& env, int v4, int v6, Port port)
      : RTSPServer(env, v4, v6, port, nullptr, 65) {}

  ClientConnection* createNewClientConnection(int socket,
                                              struct sockaddr_storage const& addr) override {
    ClientConnection* c = RTSPServer::createNewClientConnection(socket, addr);
    if (g_tcp_sndbuf > 0) increaseSendBufferTo(envir(), socket, g_tcp_sndbuf);
    return c;
  }
};

// Hands out the fixture bytes, starting over at the end, forever.
class LoopingMemorySource : public FramedSource {
public:
  static LoopingMemorySource* createNew(UsageEnvironment& env) {
    return new LoopingMemorySource(env);
  }

private:
  explicit LoopingMemorySource(UsageEnvironment& env) : FramedSource(env) {}

  void doGetNextFrame() override {
    // Deliver from the event loop, not from inside the caller's stack, so a
    // greedy parser cannot recurse without bound.
    nextTask() = envir().taskScheduler().scheduleDelayedTask(0, deliver, this);
  }

  static void deliver(void* self) { static_cast<LoopingMemorySource*>(self)->deliver(); }

  void deliver() {
    size_t left = g_stream.size() - fPos;
    size_t n = fMaxSize < left ? fMaxSize : left;
    memcpy(fTo, &g_stream[fPos], n);
    fPos = (fPos + n) % g_stream.size();
    fFrameSize = static_cast<unsigned>(n);
    fNumTruncatedBytes = 0;
    gettimeofday(&fPresentationTime, nullptr);
    fDurationInMicroseconds = 0;  // the framer paces by access unit
    FramedSource::afterGetting(this);
  }

  size_t fPos = 0;
};

// H264VideoStreamFramer at a fixed frame rate (a VUI timing in the SPS, if
// any, takes over, as it does in live555's file servers).
class PacedH264Framer : public H264VideoStreamFramer {
public:
  static PacedH264Framer* createNew(UsageEnvironment& env, FramedSource* input) {
    return new PacedH264Framer(env, input);
  }

private:
  PacedH264Framer(UsageEnvironment& env, FramedSource* input)
      : H264VideoStreamFramer(env, input, True, False, False) {
    fFrameRate = g_fps;
  }
};

// The shared live H.264 subsession.
class LiveH264Subsession : public OnDemandServerMediaSubsession {
public:
  static LiveH264Subsession* createNew(UsageEnvironment& env) {
    return new LiveH264Subsession(env);
  }

private:
  explicit LiveH264Subsession(UsageEnvironment& env)
      : OnDemandServerMediaSubsession(env, True /* reuseFirstSource */) {}
  ~LiveH264Subsession() override { delete[] fAuxSDPLine; }

  FramedSource* createNewStreamSource(unsigned, unsigned& estBitrate) override {
    estBitrate = 5000;  // kbps; the 1080p fixtures are ~4.1 Mbit/s
    return PacedH264Framer::createNew(envir(), LoopingMemorySource::createNew(envir()));
  }

  RTPSink* createNewRTPSink(Groupsock* rtpGroupsock, unsigned char payloadType,
                            FramedSource*) override {
    return H264VideoRTPSink::createNew(envir(), rtpGroupsock, payloadType);
  }

  // The sink knows SPS/PPS (for sprop-parameter-sets) only once the framer
  // has parsed them, so run it until then, polling every 10 ms.
  char const* getAuxSDPLine(RTPSink* sink, FramedSource* source) override {
    if (fAuxSDPLine != nullptr) return fAuxSDPLine;
    fProbeSink = sink;
    fProbeDone = 0;
    sink->startPlaying(*source, probeEnded, this);
    probe();
    envir().taskScheduler().doEventLoop(&fProbeDone);
    return fAuxSDPLine;
  }

  static void probeEnded(void* self) { static_cast<LiveH264Subsession*>(self)->fProbeDone = 1; }
  static void probeTask(void* self) { static_cast<LiveH264Subsession*>(self)->probe(); }

  void probe() {
    char const* line = fProbeSink->auxSDPLine();
    if (line != nullptr) {
      fAuxSDPLine = strDup(line);
      fProbeDone = 1;
    } else if (!fProbeDone) {
      nextTask() = envir().taskScheduler().scheduleDelayedTask(10000, probeTask, this);
    }
  }

  char* fAuxSDPLine = nullptr;
  RTPSink* fProbeSink = nullptr;
  char volatile fProbeDone = 0;
};

bool load(char const* path) {
  FILE* f = fopen(path, "rb");
  if (f == nullptr) return false;
  unsigned char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) g_stream.insert(g_stream.end(), buf, buf + n);
  fclose(f);
  return !g_stream.empty();
}

[[noreturn]] void usage(char const* why) {
  fprintf(stderr, "live555_h264_server: %s\nusage: live555_h264_server --fixture FILE "
                  "[--port N] [--fps F] [--path NAME] [--tcp-sndbuf BYTES]\n", why);
  exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  char const* fixture = nullptr;
  char const* path = "live";
  unsigned port = 0;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (i + 1 >= argc) usage("missing value");
    char const* v = argv[++i];
    if (a == "--fixture") fixture = v;
    else if (a == "--port") port = static_cast<unsigned>(atoi(v));
    else if (a == "--fps") g_fps = atof(v);
    else if (a == "--path") path = v;
    else if (a == "--tcp-sndbuf") g_tcp_sndbuf = static_cast<unsigned>(atoi(v));
    else usage("unknown option");
  }
  if (fixture == nullptr) usage("--fixture is required");
  if (!(g_fps > 0.0 && g_fps <= 240.0)) usage("--fps must be in (0, 240]");
  if (!load(fixture)) {
    fprintf(stderr, "live555_h264_server: cannot read %s\n", fixture);
    return 1;
  }

  // Loopback only: RTSP listening sockets and the RTP/RTCP groupsocks.
  ReceivingInterfaceAddr = htonl(INADDR_LOOPBACK);
  SendingInterfaceAddr = htonl(INADDR_LOOPBACK);
  ReceivingInterfaceAddr6 = in6addr_loopback;
  // An IDR slice of the 1080p fixtures is up to ~190 KB in one NAL unit;
  // the default (60000) would truncate it.
  OutPacketBuffer::maxSize = 1000000;

  TaskScheduler* scheduler = BasicTaskScheduler::createNew();
  UsageEnvironment* env = BasicUsageEnvironment::createNew(*scheduler);
  RTSPServer* server = TestRTSPServer::createNew(*env, Port(port));
  if (server == nullptr) {
    fprintf(stderr, "live555_h264_server: cannot listen: %s\n", env->getResultMsg());
    return 1;
  }
  ServerMediaSession* sms = ServerMediaSession::createNew(
      *env, path, path, "rtsnap interop test: live, shared H.264 fixture");
  sms->addSubsession(LiveH264Subsession::createNew(*env));
  server->addServerMediaSession(sms);

  char* url = server->ipv4rtspURL(sms);
  printf("READY %s\n", url);
  fflush(stdout);
  delete[] url;
  env->taskScheduler().doEventLoop();  // until killed
  return 0;
}
