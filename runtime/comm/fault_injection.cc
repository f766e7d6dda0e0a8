#include "runtime/comm/fault_injection.h"

#include <signal.h>

#include <chrono>
#include <thread>

#include "ir/error.h"

namespace ds {
namespace {

class FaultyCommunicator : public Communicator {
 public:
  FaultyCommunicator(Communicator& inner, const FaultSpec& fault) : inner_(inner), fault_(fault) {}

  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  std::string kind() const override { return inner_.kind(); }

  void allReduce(const void* send, void* recv, int64_t count, DType dtype,
                 const CollectiveSite& site) override {
    enter(site);
    inner_.allReduce(send, recv, count, dtype, site);
  }
  void reduceScatter(const void* send, void* recv, int64_t recv_count, DType dtype,
                     const CollectiveSite& site) override {
    enter(site);
    inner_.reduceScatter(send, recv, recv_count, dtype, site);
  }
  void allGather(const void* send, void* recv, int64_t send_count, DType dtype,
                 const CollectiveSite& site) override {
    enter(site);
    inner_.allGather(send, recv, send_count, dtype, site);
  }
  void broadcast(void* buf, int64_t count, DType dtype, int root,
                 const CollectiveSite& site) override {
    enter(site);
    inner_.broadcast(buf, count, dtype, root, site);
  }
  void barrier(const CollectiveSite& site) override {
    enter(site);
    inner_.barrier(site);
  }

 private:
  void enter(const CollectiveSite& site) {
    if (fault_.rank != inner_.rank() || calls_++ != fault_.collective) return;
    switch (fault_.mode) {
      case FaultSpec::Mode::Throw:
        throw makeError("injected fault (--fault) before ", site.describe());
      case FaultSpec::Mode::Kill:
        raise(SIGKILL);
        break;
      case FaultSpec::Mode::Hang:
        for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
    }
  }

  Communicator& inner_;
  const FaultSpec fault_;
  int64_t calls_ = 0;
};

}  // namespace

FaultSpec parseFaultSpec(const std::string& text) {
  FaultSpec f;
  auto bad = [&] {
    return makeError("--fault '", text, "': expected RANK:K:MODE (MODE throw, kill or hang)");
  };
  size_t a = text.find(':'), b = a == std::string::npos ? a : text.find(':', a + 1);
  if (b == std::string::npos) throw bad();
  try {
    f.rank = std::stoi(text.substr(0, a));
    f.collective = std::stoll(text.substr(a + 1, b - a - 1));
  } catch (const std::exception&) {
    throw bad();
  }
  std::string mode = text.substr(b + 1);
  if (mode == "throw")
    f.mode = FaultSpec::Mode::Throw;
  else if (mode == "kill")
    f.mode = FaultSpec::Mode::Kill;
  else if (mode == "hang")
    f.mode = FaultSpec::Mode::Hang;
  else
    throw bad();
  if (f.rank < 0 || f.collective < 0) throw bad();
  return f;
}

std::unique_ptr<Communicator> withFault(Communicator& inner, const FaultSpec& fault) {
  // Without a fault (rank -1) the wrapper never fires: a plain forwarder.
  return std::make_unique<FaultyCommunicator>(inner, fault);
}

}  // namespace ds
