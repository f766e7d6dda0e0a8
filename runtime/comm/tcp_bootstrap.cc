#include "runtime/comm/tcp_bootstrap.h"

#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "ir/error.h"
#include "runtime/comm/comm_util.h"

namespace ds {
namespace {

int envInt(const char* name, bool required, int fallback) {
  const char* v = std::getenv(name);
  if (!v) {
    DS_CHECK(!required, "the torchrun environment lacks ", name,
             " (set MASTER_ADDR, MASTER_PORT, RANK and WORLD_SIZE)");
    return fallback;
  }
  char* end = nullptr;
  long x = std::strtol(v, &end, 10);
  DS_CHECK(end != v && *end == '\0' && x >= 0, name, "='", v, "' is not a number");
  return static_cast<int>(x);
}

// Milliseconds left until `deadline`, at least 0.
int msLeft(comm::Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - comm::Clock::now());
  return static_cast<int>(std::max<int64_t>(0, left.count()));
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// Moves exactly n bytes, or returns false at the deadline or when the peer hangs up.
bool transfer(int fd, void* buf, size_t n, bool send, comm::Clock::time_point deadline) {
  auto* p = static_cast<uint8_t*>(buf);
  while (n > 0) {
    pollfd pfd{fd, static_cast<short>(send ? POLLOUT : POLLIN), 0};
    if (poll(&pfd, 1, msLeft(deadline)) <= 0) return false;
    ssize_t k = send ? ::send(fd, p, n, MSG_NOSIGNAL) : ::recv(fd, p, n, 0);
    if (k <= 0) return false;
    p += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}

std::vector<uint8_t> serve(const TorchrunEnv& env, const std::vector<uint8_t>& data,
                           double timeout_s) {
  auto deadline = comm::deadlineAfter(timeout_s);
  Fd listener(socket(AF_INET, SOCK_STREAM, 0));
  int one = 1;
  setsockopt(listener.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  addr.sin_port = htons(static_cast<uint16_t>(env.master_port));
  DS_CHECK(bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
               listen(listener.get(), env.world_size) == 0,
           "rank 0: cannot listen on MASTER_PORT ", env.master_port, ": ", std::strerror(errno));
  std::vector<char> joined(static_cast<size_t>(env.world_size), 0);
  joined[0] = 1;
  uint64_t size = data.size();
  for (int served = 1; served < env.world_size;) {
    pollfd pfd{listener.get(), POLLIN, 0};
    int ready = poll(&pfd, 1, msLeft(deadline));
    if (ready <= 0) {
      std::vector<int> missing;
      for (int r = 0; r < env.world_size; ++r)
        if (!joined[r]) missing.push_back(r);
      throw Error(
          comm::failureMessage({"bootstrap", "MASTER_PORT " + std::to_string(env.master_port)},
                               comm::timeoutWhat(timeout_s), missing));
    }
    Fd peer(accept(listener.get(), nullptr, nullptr));
    int32_t rank = -1;
    if (peer.get() < 0 || !transfer(peer.get(), &rank, sizeof rank, false, deadline)) continue;
    if (rank <= 0 || rank >= env.world_size || joined[rank]) continue;  // a stranger
    if (!transfer(peer.get(), &size, sizeof size, true, deadline) ||
        !transfer(peer.get(), const_cast<uint8_t*>(data.data()), data.size(), true, deadline))
      continue;
    joined[rank] = 1;
    ++served;
  }
  return data;
}

std::vector<uint8_t> fetch(const TorchrunEnv& env, double timeout_s) {
  auto deadline = comm::deadlineAfter(timeout_s);
  const std::string where = env.master_addr + ":" + std::to_string(env.master_port);
  addrinfo hints{}, *found = nullptr;
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  DS_CHECK(getaddrinfo(env.master_addr.c_str(), std::to_string(env.master_port).c_str(), &hints,
                       &found) == 0 &&
               found,
           "MASTER_ADDR '", env.master_addr, "' does not resolve");
  sockaddr_in addr;
  std::memcpy(&addr, found->ai_addr, sizeof addr);
  freeaddrinfo(found);
  // Rank 0 may not listen yet: retry until the deadline.
  while (true) {
    Fd fd(socket(AF_INET, SOCK_STREAM, 0));
    if (connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
      int32_t rank = env.rank;
      uint64_t size = 0;
      std::vector<uint8_t> data;
      if (transfer(fd.get(), &rank, sizeof rank, true, deadline) &&
          transfer(fd.get(), &size, sizeof size, false, deadline)) {
        data.resize(size);
        if (transfer(fd.get(), data.data(), size, false, deadline)) return data;
      }
    }
    if (comm::Clock::now() > deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  throw Error(comm::failureMessage({"bootstrap", where}, comm::timeoutWhat(timeout_s), {0}));
}

}  // namespace

TorchrunEnv torchrunEnvFromEnvironment() {
  TorchrunEnv env;
  env.rank = envInt("RANK", true, 0);
  env.world_size = envInt("WORLD_SIZE", true, 1);
  env.local_rank = envInt("LOCAL_RANK", false, env.rank);
  env.master_port = envInt("MASTER_PORT", true, 0);
  const char* addr = std::getenv("MASTER_ADDR");
  DS_CHECK(addr && *addr, "the torchrun environment lacks MASTER_ADDR");
  env.master_addr = addr;
  DS_CHECK(env.rank < env.world_size, "RANK=", env.rank,
           " is not below WORLD_SIZE=", env.world_size);
  return env;
}

std::vector<uint8_t> tcpBroadcastFromRank0(const TorchrunEnv& env, std::vector<uint8_t> data,
                                           double timeout_s) {
  if (env.world_size == 1) return data;
  return env.rank == 0 ? serve(env, data, timeout_s) : fetch(env, timeout_s);
}

}  // namespace ds
