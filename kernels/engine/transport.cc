// TCP transport of an expert-parallel group (see transport.h for the protocol).
#include "engine/transport.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

namespace lm {

namespace {

constexpr uint32_t MAGIC = 0x50454d4c;  // "LMEP"
constexpr uint32_t PROTOCOL_VERSION = 1;
constexpr int RETRY_MS = 100;
constexpr int CONNECT_ATTEMPT_MS = 3000;
constexpr int HELLO_MS = 5000;  // one address that swallows SYNs must not use up the deadline

using Clock = std::chrono::steady_clock;

int64_t ms_left(Clock::time_point deadline) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
}

std::string errno_str() { return std::strerror(errno); }

void set_socket_options(int fd) {
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL, 0) | O_NONBLOCK);
}

/** Waits for `events` on fd; false when the deadline passes first. */
bool wait_fd(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    const int64_t left = ms_left(deadline);
    if (left <= 0) return false;
    pollfd p{fd, events, 0};
    const int n = poll(&p, 1, static_cast<int>(std::min<int64_t>(left, 1 << 30)));
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) throw Error("poll: " + errno_str());
  }
}

void write_full(int fd, const void* data, size_t n, Clock::time_point deadline, const std::string& peer) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w > 0) {
      p += w;
      n -= static_cast<size_t>(w);
    } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      if (!wait_fd(fd, POLLOUT, deadline)) throw Error(peer + " did not read within the deadline");
    } else {
      throw Error("cannot send to " + peer + ": " + errno_str());
    }
  }
}

void read_full(int fd, void* data, size_t n, Clock::time_point deadline, const std::string& peer) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    const ssize_t r = recv(fd, p, n, 0);
    if (r > 0) {
      p += r;
      n -= static_cast<size_t>(r);
    } else if (r == 0) {
      throw Error(peer + " closed the connection");
    } else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
      if (!wait_fd(fd, POLLIN, deadline)) throw Error(peer + " sent nothing within the deadline");
    } else {
      throw Error("cannot read from " + peer + ": " + errno_str());
    }
  }
}

template <class T>
void put(std::vector<char>& b, T v) {
  const char* p = reinterpret_cast<const char*>(&v);
  b.insert(b.end(), p, p + sizeof v);
}

template <class T>
T take(int fd, Clock::time_point deadline, const std::string& peer) {
  T v;
  read_full(fd, &v, sizeof v, deadline, peer);
  return v;
}

/**
 * "host:port", "[v6 address]:port" (RFC 3986 style) or a bare IPv6 address with a port after its
 * last colon is ambiguous and refused: IPv6 literals must be bracketed.
 */
std::pair<std::string, int> split_address(const std::string& address) {
  const auto bad = [&](const std::string& why) { return Error("leader address '" + address + "' " + why + " (expected host:port or [ipv6]:port)"); };
  std::string host, port;
  if (!address.empty() && address[0] == '[') {
    const size_t close = address.find(']');
    if (close == std::string::npos || close == 1) throw bad("has an unclosed or empty '['");
    if (close + 1 >= address.size() || address[close + 1] != ':') throw bad("has no port after ']'");
    host = address.substr(1, close - 1);
    port = address.substr(close + 2);
  } else {
    const size_t colon = address.rfind(':');
    if (colon == std::string::npos || colon == 0) throw bad("is not host:port");
    host = address.substr(0, colon);
    if (host.find(':') != std::string::npos) throw bad("is an IPv6 address without brackets");
    port = address.substr(colon + 1);
  }
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos || std::stoi(port) > 65535 || std::stoi(port) == 0) throw bad("has a bad port");
  return {host, std::stoi(port)};
}

/**
 * A listening socket on every interface, port 0 picking one: dual-stack IPv6 (IPv4 peers arrive
 * as v4-mapped addresses), or IPv4 alone where the kernel has no IPv6.
 */
int listen_on(int port, int backlog) {
  int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const bool v6 = fd >= 0;
  if (!v6) fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw Error("socket: " + errno_str());
  const int one = 1, zero = 0;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_storage a{};
  socklen_t len;
  if (v6) {
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    auto* a6 = reinterpret_cast<sockaddr_in6*>(&a);
    a6->sin6_family = AF_INET6;
    a6->sin6_addr = in6addr_any;
    a6->sin6_port = htons(static_cast<uint16_t>(port));
    len = sizeof(sockaddr_in6);
  } else {
    auto* a4 = reinterpret_cast<sockaddr_in*>(&a);
    a4->sin_family = AF_INET;
    a4->sin_addr.s_addr = htonl(INADDR_ANY);
    a4->sin_port = htons(static_cast<uint16_t>(port));
    len = sizeof(sockaddr_in);
  }
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), len) != 0 || listen(fd, backlog) != 0) {
    const std::string e = errno_str();
    ::close(fd);
    throw Error("cannot listen on port " + std::to_string(port) + ": " + e);
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL, 0) | O_NONBLOCK);
  return fd;
}

int bound_port(int fd) {
  sockaddr_storage a{};
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  return a.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&a)->sin6_port) : ntohs(reinterpret_cast<sockaddr_in*>(&a)->sin_port);
}

/** The numeric host of a peer address; v4-mapped IPv6 addresses in their IPv4 form. */
std::string host_of(const sockaddr_storage& a) {
  char host[INET6_ADDRSTRLEN] = {0};
  if (a.ss_family == AF_INET6) {
    const auto& a6 = reinterpret_cast<const sockaddr_in6&>(a);
    if (IN6_IS_ADDR_V4MAPPED(&a6.sin6_addr)) inet_ntop(AF_INET, &a6.sin6_addr.s6_addr[12], host, sizeof host);
    else inet_ntop(AF_INET6, &a6.sin6_addr, host, sizeof host);
  } else {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(a).sin_addr, host, sizeof host);
  }
  return host;
}

/** Accepts one connection; returns -1 when the deadline passes first. */
int accept_until(int lfd, Clock::time_point deadline, std::string* peer_host) {
  for (;;) {
    if (!wait_fd(lfd, POLLIN, deadline)) return -1;
    sockaddr_storage a{};
    socklen_t len = sizeof a;
    const int fd = accept4(lfd, reinterpret_cast<sockaddr*>(&a), &len, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED) continue;
      throw Error("accept: " + errno_str());
    }
    if (peer_host) *peer_host = host_of(a);
    set_socket_options(fd);
    return fd;
  }
}

/** The peer of a connection that should be silent has closed it (or reset it). */
bool peer_gone(int fd) {
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, 0) <= 0) return false;
  if (p.revents & (POLLHUP | POLLERR)) return true;
  char c;
  const ssize_t r = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  return r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/** Connects a non-blocking socket, waiting at most until the deadline; false (and why) when it fails. */
bool connect_by(int fd, const sockaddr* addr, socklen_t len, Clock::time_point deadline, std::string* why) {
  if (::connect(fd, addr, len) == 0) return true;
  if (errno != EINPROGRESS && errno != EINTR) {
    *why = errno_str();
    return false;
  }
  if (!wait_fd(fd, POLLOUT, deadline)) {
    *why = "connection timed out";
    return false;
  }
  int err = 0;
  socklen_t n = sizeof err;
  getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &n);
  if (err == 0) return true;
  *why = std::strerror(err);
  return false;
}

/**
 * Connects to host:port, retrying refused connections and unresolvable names until the deadline.
 * Names resolve to IPv6 and IPv4 addresses alike (AF_UNSPEC); each is tried in the resolver's order.
 */
int connect_until(const std::string& host, int port, Clock::time_point deadline, const std::string& peer) {
  std::string last = "no attempt";
  while (ms_left(deadline) > 0) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_ADDRCONFIG;
    addrinfo* res = nullptr;
    int gai = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
    if (gai == EAI_NONAME || gai == EAI_ADDRFAMILY) {
      // AI_ADDRCONFIG hides loopback-only families (a sandbox with only lo); ask once more without it
      hints.ai_flags = 0;
      gai = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
    }
    if (gai != 0 || !res) {
      last = std::string("cannot resolve ") + host + ": " + gai_strerror(gai);
    } else {
      for (addrinfo* ai = res; ai; ai = ai->ai_next) {
        const int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
          last = "socket: " + errno_str();
          continue;
        }
        set_socket_options(fd);
        const auto attempt = std::min(deadline, Clock::now() + std::chrono::milliseconds(CONNECT_ATTEMPT_MS));
        if (connect_by(fd, ai->ai_addr, ai->ai_addrlen, attempt, &last)) {
          freeaddrinfo(res);
          return fd;
        }
        ::close(fd);
      }
      freeaddrinfo(res);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min<int64_t>(RETRY_MS, std::max<int64_t>(ms_left(deadline), 1))));
  }
  throw Error("cannot reach " + peer + " at " + (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port) + " (" + last + ")");
}

}  // namespace

Transport::Transport(const GroupOptions& g, uint64_t fingerprint) : rank_(g.rank), world_(g.world_size), timeout_ms_(g.collective_timeout_ms), fds_(static_cast<size_t>(g.world_size), -1) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(g.rendezvous_timeout_ms);
  const std::string me = "rank " + std::to_string(rank_);
  const auto [leader_host, leader_port] = split_address(g.leader_address);
  std::vector<std::string> hosts(static_cast<size_t>(world_));
  std::vector<int> ports(static_cast<size_t>(world_), 0);
  int lfd = -1;
  try {
    if (rank_ == 0) {
      lfd = listen_on(leader_port, world_);
      int arrived = 0;
      while (arrived < world_ - 1) {
        std::string host;
        const int fd = accept_until(lfd, deadline, &host);
        if (fd < 0) {
          std::string missing;
          for (int r = 1; r < world_; ++r)
            if (fds_[r] < 0) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
          throw Error("rendezvous: rank(s) " + missing + " did not arrive at " + g.leader_address + " within " + std::to_string(g.rendezvous_timeout_ms / 1000) + " s");
        }
        const std::string who = "a rank connecting from " + host;
        uint32_t magic, version, port;
        int32_t rank, world;
        uint64_t fp;
        // a silent connection (a port probe) must not stall the rendezvous
        const auto hello_deadline = std::min(deadline, Clock::now() + std::chrono::milliseconds(HELLO_MS));
        try {
          magic = take<uint32_t>(fd, hello_deadline, who);
          version = take<uint32_t>(fd, hello_deadline, who);
          rank = take<int32_t>(fd, hello_deadline, who);
          world = take<int32_t>(fd, hello_deadline, who);
          port = take<uint32_t>(fd, hello_deadline, who);
          fp = take<uint64_t>(fd, hello_deadline, who);
        } catch (const Error&) {
          ::close(fd);  // not one of ours (a probe, a stale process): ignore it
          continue;
        }
        std::string refuse;
        if (magic != MAGIC || version != PROTOCOL_VERSION) refuse = who + " does not speak protocol version " + std::to_string(PROTOCOL_VERSION);
        else if (world != world_) refuse = "rank " + std::to_string(rank) + " has world size " + std::to_string(world) + ", the leader " + std::to_string(world_);
        else if (rank < 1 || rank >= world_) refuse = who + " claims rank " + std::to_string(rank) + " outside [1, " + std::to_string(world_) + ")";
        else if (fds_[rank] >= 0 && !peer_gone(fds_[rank])) refuse = "rank " + std::to_string(rank) + " joined twice";
        else if (fp != fingerprint) refuse = "rank " + std::to_string(rank) + " has a different model or shard plan than the leader";
        if (!refuse.empty()) {
          std::vector<char> b;
          put<uint32_t>(b, 1);
          put<uint32_t>(b, static_cast<uint32_t>(refuse.size()));
          b.insert(b.end(), refuse.begin(), refuse.end());
          for (int r = 1; r < world_; ++r)
            if (fds_[r] >= 0) try { write_full(fds_[r], b.data(), b.size(), deadline, "rank " + std::to_string(r)); } catch (const Error&) {}
          try { write_full(fd, b.data(), b.size(), deadline, who); } catch (const Error&) {}
          ::close(fd);
          throw Error("rendezvous: " + refuse);
        }
        if (fds_[rank] >= 0) {
          // the rank's earlier process died while the group was forming (its pod restarted): take the new one
          ::close(fds_[rank]);
          --arrived;
        }
        fds_[rank] = fd;
        hosts[rank] = host;
        ports[rank] = static_cast<int>(port);
        ++arrived;
        if (arrived == world_ - 1) {
          // a rank that died after its hello (its pod restarts) must not complete the group
          for (int r = 1; r < world_; ++r) {
            if (fds_[r] >= 0 && peer_gone(fds_[r])) {
              ::close(fds_[r]);
              fds_[r] = -1;
              --arrived;
            }
          }
        }
      }
      std::vector<char> table;
      put<uint32_t>(table, 0);
      for (int r = 0; r < world_; ++r) {
        put<uint32_t>(table, static_cast<uint32_t>(ports[r]));
        put<uint32_t>(table, static_cast<uint32_t>(hosts[r].size()));
        table.insert(table.end(), hosts[r].begin(), hosts[r].end());
      }
      for (int r = 1; r < world_; ++r) write_full(fds_[r], table.data(), table.size(), deadline, "rank " + std::to_string(r));
    } else {
      lfd = listen_on(0, world_);
      const std::string leader = "the leader (rank 0)";
      fds_[0] = connect_until(leader_host, leader_port, deadline, leader);
      std::vector<char> hello;
      put<uint32_t>(hello, MAGIC);
      put<uint32_t>(hello, PROTOCOL_VERSION);
      put<int32_t>(hello, rank_);
      put<int32_t>(hello, world_);
      put<uint32_t>(hello, static_cast<uint32_t>(bound_port(lfd)));
      put<uint64_t>(hello, fingerprint);
      write_full(fds_[0], hello.data(), hello.size(), deadline, leader);
      if (take<uint32_t>(fds_[0], deadline, leader) != 0) {
        std::string why(take<uint32_t>(fds_[0], deadline, leader), '\0');
        read_full(fds_[0], why.data(), why.size(), deadline, leader);
        throw Error("rendezvous: the leader refused the group: " + why);
      }
      for (int r = 0; r < world_; ++r) {
        ports[r] = static_cast<int>(take<uint32_t>(fds_[0], deadline, leader));
        hosts[r].resize(take<uint32_t>(fds_[0], deadline, leader));
        read_full(fds_[0], hosts[r].data(), hosts[r].size(), deadline, leader);
      }
      for (int r = 1; r < rank_; ++r) {
        const std::string peer = "rank " + std::to_string(r);
        fds_[r] = connect_until(hosts[r], ports[r], deadline, peer);
        std::vector<char> b;
        put<uint32_t>(b, MAGIC);
        put<int32_t>(b, rank_);
        put<uint64_t>(b, fingerprint);
        write_full(fds_[r], b.data(), b.size(), deadline, peer);
      }
      for (int n = rank_ + 1; n < world_; ++n) {
        const int fd = accept_until(lfd, deadline, nullptr);
        if (fd < 0) throw Error("rendezvous: ranks above " + std::to_string(rank_) + " did not connect within " + std::to_string(g.rendezvous_timeout_ms / 1000) + " s");
        const uint32_t magic = take<uint32_t>(fd, deadline, "a peer");
        const int32_t r = take<int32_t>(fd, deadline, "a peer");
        const uint64_t fp = take<uint64_t>(fd, deadline, "a peer");
        if (magic != MAGIC || r <= rank_ || r >= world_ || fds_[r] >= 0 || fp != fingerprint) {
          ::close(fd);
          throw Error("rendezvous: unexpected peer connection (rank " + std::to_string(r) + ")");
        }
        fds_[r] = fd;
      }
    }
    ::close(lfd);
    lfd = -1;
  } catch (const Error& e) {
    if (lfd >= 0) ::close(lfd);
    close(e.what());
    throw Error(std::string("expert-parallel group: ") + me + ": " + e.what());
  }
  // every link carries one byte each way before the group is declared ready
  std::vector<std::vector<char>> ping(static_cast<size_t>(world_), std::vector<char>(1, 1)), pong(static_cast<size_t>(world_), std::vector<char>(1));
  const int saved = timeout_ms_;
  timeout_ms_ = std::max(1, static_cast<int>(std::max<int64_t>(ms_left(deadline), 1)));
  exchange(ping, pong, "rendezvous barrier");
  timeout_ms_ = saved;
}

Transport::~Transport() { close("the engine was closed"); }

void Transport::close(const std::string& reason) {
  if (broken_.empty()) broken_ = reason;
  for (int& fd : fds_) {
    if (fd >= 0) {
      shutdown(fd, SHUT_RDWR);
      ::close(fd);
    }
    fd = -1;
  }
}

void Transport::fail(const std::string& message) {
  const std::string full = "expert-parallel group: rank " + std::to_string(rank_) + ": " + message;
  close(full);
  throw Error(full);
}

void Transport::exchange(const std::vector<std::vector<char>>& send, std::vector<std::vector<char>>& recv, const std::string& what) {
  if (!broken_.empty()) throw Error("expert-parallel group is broken: " + broken_);
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms_);
  std::vector<size_t> sent(static_cast<size_t>(world_), 0), got(static_cast<size_t>(world_), 0);
  auto send_left = [&](int p) { return p != rank_ && sent[p] < send[p].size(); };
  auto recv_left = [&](int p) { return p != rank_ && got[p] < recv[p].size(); };
  std::vector<pollfd> polls;
  std::vector<int> peer_of;
  for (;;) {
    polls.clear();
    peer_of.clear();
    for (int p = 0; p < world_; ++p) {
      const short ev = static_cast<short>((send_left(p) ? POLLOUT : 0) | (recv_left(p) ? POLLIN : 0));
      if (ev) {
        polls.push_back({fds_[p], ev, 0});
        peer_of.push_back(p);
      }
    }
    if (polls.empty()) return;
    const int64_t left = ms_left(deadline);
    if (left <= 0) {
      std::string silent;
      for (int p : peer_of) silent += (silent.empty() ? "" : ", ") + std::to_string(p);
      fail(what + ": no answer from rank(s) " + silent + " within " + std::to_string(timeout_ms_) + " ms (collective timeout; the rank hangs or is gone)");
    }
    const int n = poll(polls.data(), polls.size(), static_cast<int>(std::min<int64_t>(left, 1 << 30)));
    if (n < 0 && errno != EINTR) fail(what + ": poll: " + errno_str());
    for (size_t i = 0; n > 0 && i < polls.size(); ++i) {
      const int p = peer_of[i];
      const short re = polls[i].revents;
      if (!re) continue;
      const std::string peer = "rank " + std::to_string(p);
      if (recv_left(p) && (re & (POLLIN | POLLHUP | POLLERR))) {
        const ssize_t r = ::recv(fds_[p], recv[p].data() + got[p], recv[p].size() - got[p], 0);
        if (r == 0 || (r < 0 && (errno == ECONNRESET || errno == EPIPE))) fail(what + ": " + peer + " closed its connection (it exited or failed)");
        if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) fail(what + ": link to " + peer + ": " + errno_str());
        if (r > 0) got[p] += static_cast<size_t>(r);
      }
      if (send_left(p) && (re & (POLLOUT | POLLHUP | POLLERR))) {
        const ssize_t w = ::send(fds_[p], send[p].data() + sent[p], send[p].size() - sent[p], MSG_NOSIGNAL);
        if (w < 0 && (errno == ECONNRESET || errno == EPIPE)) fail(what + ": " + peer + " closed its connection (it exited or failed)");
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) fail(what + ": link to " + peer + ": " + errno_str());
        if (w > 0) sent[p] += static_cast<size_t>(w);
      }
      if (!recv_left(p) && !send_left(p)) continue;
      if ((re & (POLLHUP | POLLERR)) && !(re & (POLLIN | POLLOUT))) fail(what + ": " + peer + " closed its connection (it exited or failed)");
    }
  }
}

}  // namespace lm
