import { WeftError } from '@weft/core';
import { errnoName, netnsPath, show, TunErrorCode, toWeftError } from './errors.js';
import { HandleKind, type NativeHandle, native } from './native.js';
import { Options } from './options.js';

/** Options of {@link NetlinkSocket.open}. */
export interface NetlinkOpenOptions {
  /** Netlink family (default NETLINK_ROUTE, 0). */
  protocol?: number;
  /** Multicast groups to join at bind (a bit mask of RTMGRP_*), for change notifications. */
  groups?: number;
  /** The network namespace (a name under /run/netns, or a path) whose kernel state to talk to. */
  netns?: string;
}

/**
 * A raw netlink socket: sends whole messages to the kernel and hands every datagram it receives
 * to `onMessage`. Framing, sequence numbers and parsing belong to the caller (@weft/netlink).
 */
export class NetlinkSocket {
  private handle: NativeHandle | undefined;
  /** The port id the kernel assigned (nl_pid), the destination of its replies. */
  readonly portId: number;

  private constructor(handle: NativeHandle, portId: number) {
    this.handle = handle;
    this.portId = portId;
  }

  /** Opens and binds a netlink socket (rtnetlink by default), optionally in another namespace. */
  static open(options: NetlinkOpenOptions = {}): NetlinkSocket {
    const o = new Options(options, 'NetlinkSocket.open');
    const n = native();
    const protocol = o.integer('protocol', 0, 31) ?? n.constants.NETLINK_ROUTE;
    const groups = o.integer('groups', 0, 0xffffffff) ?? 0;
    const netns = netnsPath(o.string('netns'));
    try {
      const opened = n.openNetlink(protocol, groups, netns);
      return new NetlinkSocket(new n.Handle(opened.fd, HandleKind.netlink), opened.portId);
    } catch (err) {
      throw toWeftError(err, 'opening a netlink socket');
    }
  }

  get closed(): boolean {
    return this.handle === undefined;
  }

  /** Sends one datagram (one or more netlink messages) to the kernel. */
  send(message: Uint8Array): void {
    if (!this.handle) throw new WeftError(TunErrorCode.closed, 'the netlink socket is closed');
    if (!(message instanceof Uint8Array))
      throw new WeftError(
        TunErrorCode.badOption,
        'a netlink message must be a Uint8Array or Buffer of whole netlink messages',
      );
    try {
      this.handle.sendBuffer(message);
    } catch (err) {
      throw toWeftError(err, 'sending to the kernel over netlink');
    }
  }

  /**
   * Delivers each received datagram. `onError` hears read failures; ENOBUFS means the kernel
   * dropped messages for this socket, so a listener must resynchronise (dump again).
   */
  onMessage(onMessage: (datagram: Buffer) => void, onError?: (err: WeftError) => void): void {
    if (!this.handle) throw new WeftError(TunErrorCode.closed, 'the netlink socket is closed');
    if (typeof onMessage !== 'function' || (onError !== undefined && typeof onError !== 'function'))
      throw new WeftError(TunErrorCode.badOption, 'onMessage and onError must be functions');
    this.handle.startReading((m) => {
      if (typeof m === 'number') {
        const code = errnoName(-m);
        const error = Object.assign(new Error(`netlink receive failed (${code})`), {
          code,
          errno: -m,
          syscall: 'recv',
        });
        onError?.(toWeftError(error, 'receiving from the kernel over netlink'));
        return;
      }
      onMessage(m);
    });
  }

  /** Sets a socket option: NETLINK_NO_ENOBUFS, NETLINK_GET_STRICT_CHK or SO_RCVBUFFORCE (root). */
  setOption(name: 'netlinkNoEnobufs' | 'netlinkGetStrictChk' | 'rcvbufforce', value: number): void {
    if (!this.handle) throw new WeftError(TunErrorCode.closed, 'the netlink socket is closed');
    try {
      this.handle.setOption(name, value);
    } catch (err) {
      throw toWeftError(err, `setting ${show(name)} on a netlink socket`);
    }
  }

  /** Lets the process exit while the socket is open (like socket.unref()). */
  unref(): void {
    this.handle?.unref();
  }

  /** Keeps the process alive while the socket is open again, after unref(). */
  ref(): void {
    this.handle?.ref();
  }

  /** Safe to call twice; nothing is delivered after close. */
  close(): void {
    const h = this.handle;
    this.handle = undefined;
    h?.close();
  }
}
