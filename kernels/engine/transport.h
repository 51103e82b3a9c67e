// The CPU backend's transport between the ranks of an expert-parallel group: a full mesh of TCP
// sockets built by a rendezvous through rank 0's address, and one collective (an all-to-all of
// byte buffers of sizes both sides know). CUDA groups use NCCL instead; this one lets CI run the
// same dispatch/combine logic with rank processes on loopback.
//
// Rendezvous: every rank r > 0 opens a listener on an ephemeral port, connects to the leader
// (retrying until the rendezvous deadline) and says hello {rank, world size, listen port,
// fingerprint}. Once all ranks have arrived the leader answers each with the peer table (the
// address it saw each rank connect from, plus its listen port) or with an error (duplicate rank,
// different world size or fingerprint). Rank i then connects to every rank 0 < j < i and accepts
// from every j > i; the leader's links are the rendezvous connections themselves.
//
// Addresses: the leader address is host:port or [IPv6 literal]:port; names resolve to IPv6 and
// IPv4 alike (IPv6-only and dual-stack clusters). Every rank listens dual-stack (IPv4 peers appear
// v4-mapped and are recorded in IPv4 form) or IPv4 alone where the kernel has no IPv6, and peers
// are reached at the address the leader saw them connect from.
//
// Failure: every exchange has a deadline. A peer that closes its socket or stays silent past the
// deadline fails the exchange with an lm::Error naming it; the transport then closes all its
// sockets, so the other ranks fail at once too (they see this rank close) instead of waiting for
// their own deadlines, and every later exchange throws the first error.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine.h"

namespace lm {

class Transport {
 public:
  /** Rendezvous; blocks until the mesh is complete or throws naming the ranks that did not arrive. */
  Transport(const GroupOptions& group, uint64_t fingerprint);
  ~Transport();
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  int rank() const { return rank_; }
  int world_size() const { return world_; }

  /**
   * Sends send[p] to every peer p and receives exactly recv[p].size() bytes from each (the
   * caller sizes recv). Entries for this rank are ignored. `what` names the collective in errors.
   */
  void exchange(const std::vector<std::vector<char>>& send, std::vector<std::vector<char>>& recv, const std::string& what);

  /** Closes every link; peers fail their next exchange at once. Later exchanges throw `reason`. */
  void close(const std::string& reason);

 private:
  int rank_, world_;
  int timeout_ms_;
  std::vector<int> fds_;  // per rank; -1 for this rank
  std::string broken_;    // first failure; non-empty once the group is unusable

  [[noreturn]] void fail(const std::string& message);
};

}  // namespace lm
