package engine

import (
	"context"
	"errors"
	"os"
	"slices"
	"time"

	"github.com/postrelay/postrelay/actors"
)

// coordMsg is what the coordinator's mailbox carries: a partition actor that
// exited, for good.
type coordMsg struct {
	partition int
	epoch     int64
	err       error
	release   bool // stopped on purpose: release the lease
}

// owned is a partition this instance holds a lease on.
type owned struct {
	epoch    int64
	actor    *partitionActor
	ref      *actors.Ref
	stopping bool
	release  bool // stopping on purpose: release the lease once stopped
	lost     bool // EventLeaseLost was emitted
}

// coordinator heartbeats, computes the assignment, and acquires, renews and
// releases leases, spawning and stopping partition actors. See doc.go for the
// lease state diagram and the fencing rules.
type coordinator struct {
	e       *Engine
	sup     *actors.Supervisor
	mailbox *actors.Mailbox[coordMsg]
	owned   map[int]*owned
	live    []string
	ticks   int
	host    string
}

func newCoordinator(e *Engine, sup *actors.Supervisor) *coordinator {
	host, _ := os.Hostname()
	return &coordinator{
		e:       e,
		sup:     sup,
		mailbox: actors.NewMailbox[coordMsg](1024),
		owned:   make(map[int]*owned),
		host:    host,
	}
}

// Serve runs the coordination loop until ctx ends, then stops every
// partition actor, releases the leases at once and removes the instance.
func (c *coordinator) Serve(ctx context.Context) error {
	defer c.shutdown(ctx)
	ticker := time.NewTicker(c.e.cfg.HeartbeatInterval)
	defer ticker.Stop()
	c.tick(ctx)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
			c.tick(ctx)
		case <-c.mailbox.Ready():
			for {
				m, ok := c.mailbox.TryReceive()
				if !ok {
					break
				}
				c.handleExit(ctx, m)
			}
		}
	}
}

func (c *coordinator) tick(ctx context.Context) {
	cfg := c.e.cfg
	log := cfg.Logger
	sent := time.Now()
	deadline := sent.Add(cfg.LeaseTTL)
	st := c.e.store
	if err := st.heartbeat(ctx, cfg.InstanceID, c.host, os.Getpid()); err != nil {
		if ctx.Err() == nil {
			log.Warn("postrelay: coordinator heartbeat failed", "error", err)
		}
		return
	}

	// Renew everything held, including partitions whose actor is stopping.
	if len(c.owned) > 0 {
		ps := make([]int32, 0, len(c.owned))
		epochs := make([]int64, 0, len(c.owned))
		for p, o := range c.owned {
			ps = append(ps, int32(p))
			epochs = append(epochs, o.epoch)
		}
		renewed, err := st.renew(ctx, cfg.InstanceID, cfg.LeaseTTL, ps, epochs)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("postrelay: coordinator lease renewal failed", "error", err)
			}
			return
		}
		for p, o := range c.owned {
			if renewed[p] {
				o.actor.mailbox.TrySend(leaseMsg{deadline: deadline})
				continue
			}
			// Lost: someone else holds it now, or it was reset. The actor
			// must not commit anything more (the fence would stop it too).
			log.Warn("postrelay: coordinator found partition lease lost", "partition", p, "epoch", o.epoch)
			if !o.lost {
				o.lost = true
				lost := c.event(EventLeaseLost)
				lost.Partition, lost.Epoch = p, o.epoch
				c.e.emit(lost)
			}
			_ = o.actor.mailbox.SendControl(ctx, leaseMsg{lost: true})
			if !o.stopping {
				o.stopping = true
				c.stopAsync(p, o, false)
			}
		}
	}

	live, err := st.liveInstances(ctx, cfg.LeaseTTL)
	if err != nil {
		if ctx.Err() == nil {
			log.Warn("postrelay: coordinator reading instances failed", "error", err)
		}
		return
	}
	if !slices.Equal(live, c.live) {
		c.live = live
		e := c.event(EventInstancesChanged)
		e.Count = len(live)
		c.e.emit(e)
		log.Info("postrelay: coordinator live instances changed", "live_instances", len(live))
	}
	desired := assign(cfg.InstanceID, live, c.e.partitions)

	// Release partitions that belong to someone else now.
	want := make(map[int]bool, len(desired))
	for _, p := range desired {
		want[p] = true
	}
	for p, o := range c.owned {
		if !want[p] && !o.stopping {
			o.stopping, o.release = true, true
			c.stopAsync(p, o, true)
		}
	}

	// Acquire desired partitions that are free or expired.
	var missing []int32
	for _, p := range desired {
		if _, ok := c.owned[p]; !ok {
			missing = append(missing, int32(p))
		}
	}
	if len(missing) > 0 {
		got, err := st.acquire(ctx, cfg.InstanceID, cfg.LeaseTTL, missing)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("postrelay: coordinator lease acquisition failed", "error", err)
			}
			return
		}
		for p, epoch := range got {
			c.spawn(ctx, p, epoch, deadline)
		}
	}

	c.ticks++
	if c.ticks%100 == 0 { // janitor: forget long-dead instances
		if err := st.reapInstances(ctx, 10*cfg.LeaseTTL); err != nil && ctx.Err() == nil {
			log.Warn("postrelay: coordinator reaping instances failed", "error", err)
		}
	}
}

func (c *coordinator) event(kind EventKind) Event {
	return Event{Kind: kind, Time: time.Now(), Instance: c.e.cfg.InstanceID}
}

func (c *coordinator) spawn(ctx context.Context, p int, epoch int64, deadline time.Time) {
	a := newPartitionActor(c.e, p, epoch, deadline)
	e := c.event(EventLeaseAcquired)
	e.Partition, e.Epoch = p, epoch
	a.st.apply(e)
	c.e.emit(e)
	c.e.cfg.Logger.Debug("postrelay: coordinator acquired partition", "partition", p, "epoch", epoch)
	ref := c.sup.Spawn(ctx, "partition-"+itoa(p), a)
	o := &owned{epoch: epoch, actor: a, ref: ref}
	c.owned[p] = o
	c.publishOwned()
	// Watch for the actor ending on its own (lease lost).
	c.e.wg.Go(func() {
		<-ref.Done()
		_ = c.mailbox.Send(context.Background(), coordMsg{partition: p, epoch: epoch, err: ref.Err()})
	})
	a.waker.Wake()
}

// publishOwned tells the tail poll which partitions this instance holds.
func (c *coordinator) publishOwned() {
	ps := make([]int32, 0, len(c.owned))
	for p := range c.owned {
		ps = append(ps, int32(p))
	}
	slices.Sort(ps)
	c.e.owned.Store(&ps)
}

// stopAsync stops a partition actor without blocking the coordinator (a slow
// publish must never delay heartbeats); the watcher reports the exit.
func (c *coordinator) stopAsync(p int, o *owned, release bool) {
	if release {
		c.e.wg.Go(func() {
			_ = o.ref.Stop(c.e.cfg.StopTimeout)
			_ = c.mailbox.Send(context.Background(), coordMsg{partition: p, epoch: o.epoch, release: true})
		})
		return
	}
	c.e.wg.Go(func() { _ = o.ref.Stop(c.e.cfg.StopTimeout) })
}

func (c *coordinator) handleExit(ctx context.Context, m coordMsg) {
	o, ok := c.owned[m.partition]
	if !ok || o.epoch != m.epoch {
		return
	}
	if m.release {
		if err := c.e.store.release(ctx, c.e.cfg.InstanceID, m.partition, m.epoch); err != nil && ctx.Err() == nil {
			c.e.cfg.Logger.Warn("postrelay: coordinator lease release failed", "partition", m.partition, "error", err)
		}
		delete(c.owned, m.partition)
		c.publishOwned()
		e := c.event(EventLeaseReleased)
		e.Partition, e.Epoch = m.partition, m.epoch
		c.e.emit(e)
		return
	}
	if o.release {
		return // a stop to release is in progress; its release message follows
	}
	// The actor ended by itself: the lease is lost (fenced) or it was
	// stopped after a failed renewal. Forget the partition; the next tick
	// acquires it again if it is still ours and free.
	delete(c.owned, m.partition)
	c.publishOwned()
	if !o.lost {
		lost := c.event(EventLeaseLost)
		lost.Partition, lost.Epoch, lost.Err = m.partition, m.epoch, m.err
		c.e.emit(lost)
	}
	if m.err != nil && !errors.Is(m.err, ErrLeaseLost) {
		c.e.cfg.Logger.Warn("postrelay: partition actor ended", "partition", m.partition, "error", m.err)
	}
}

// shutdown stops every partition actor (each completes the batch it
// published), then releases all leases at once so other instances take over
// without waiting for the TTL, and removes the instance row.
func (c *coordinator) shutdown(ctx context.Context) {
	cfg := c.e.cfg
	_ = c.sup.Stop(cfg.StopTimeout)
	bg, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.StopTimeout)
	defer cancel()
	if err := c.e.store.releaseAll(bg, cfg.InstanceID); err != nil {
		cfg.Logger.Warn("postrelay: coordinator releasing leases on shutdown failed", "error", err)
	}
	for p, o := range c.owned {
		if o.lost {
			continue
		}
		e := c.event(EventLeaseReleased)
		e.Partition, e.Epoch = p, o.epoch
		c.e.emit(e)
	}
	clear(c.owned)
	c.publishOwned()
	if err := c.e.store.deleteInstance(bg, cfg.InstanceID); err != nil {
		cfg.Logger.Warn("postrelay: coordinator removing instance failed", "error", err)
	}
}
