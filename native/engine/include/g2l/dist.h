// g2l engine: data-parallel distillation over c10d (NCCL on GPUs, Gloo on CPUs), no torch headers.
//
// One process per device, as torchrun and SLURM scripts start them: every process gives the same world size and
// master address, its own rank, and joins a c10d TCPStore rendezvous; the Distiller then keeps the ranks in step
// (initial weights broadcast from rank 0, BatchNorm statistics and the loss reduced over the global batch, gradients
// all-reduced in ~25 MB buckets during the backward pass).
//
// Usage:
//   g2l::DistConfig cfg = g2l::dist_config_from_env();        // RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT
//   cfg.device = "cuda:" + std::to_string(cfg.local_rank);     // one GPU per process
//   std::shared_ptr<g2l::DistContext> dist = g2l::init_distributed(cfg);   // blocks until every rank has joined
//   distiller_config.dist = dist;                              // null (the default): one process
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "g2l/engine.h"

namespace g2l {

struct DistConfig {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;  // the process's index on its node: its GPU is cuda:<local_rank>
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;                  // torchrun's default
  std::string backend = "auto";             // "auto": nccl for CUDA devices, gloo for the CPU; or "nccl" | "gloo"
  std::string device = "cpu";               // this rank's device: "cpu", "cuda:N"
  int64_t timeout_ms = 30 * 60 * 1000;      // rendezvous and collectives; a rank that stops answering ends the others
  int64_t bucket_bytes = 25 * 1024 * 1024;  // gradient bucket size (DDP's default)
};

/**
 * DistConfig from the torchrun/SLURM environment: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT (missing
 * variables keep `defaults`). Throws g2l::Error naming the variable when one is set but not a valid number, or when
 * the ranks are inconsistent (RANK >= WORLD_SIZE).
 */
DistConfig dist_config_from_env(const DistConfig& defaults = DistConfig());

/** Checks a DistConfig, throwing g2l::Error with what to fix. */
void validate_dist_config(const DistConfig& config);

/** The process group and this rank's place in it (engine-internal type; see native/engine/dist/dist.h). */
class DistContext;

/** Joins the process group (TCPStore rendezvous at master_addr:master_port, served by rank 0). Blocks until all
 * world_size ranks have joined or timeout_ms passes. */
std::shared_ptr<DistContext> init_distributed(const DistConfig& config);

struct DistInfo {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string backend;  // "gloo" | "nccl"
  std::string device;
};
DistInfo dist_info(const DistContext& context);

}  // namespace g2l
