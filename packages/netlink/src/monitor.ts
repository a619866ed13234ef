import { WeftError } from '@weft/core';
import { NetlinkSocket } from '@weft/tun';
import { AddressFamily, RtmType } from './constants.js';
import { type Message, parseMessages } from './message.js';
import {
  type Link,
  type Neighbor,
  parseLink,
  parseNeighborMessage,
  parseRouteMessage,
  type Route,
} from './rtnl.js';

/** rtnetlink multicast groups (linux/rtnetlink.h RTMGRP_*), for RtnlMonitor's `groups`. */
export const RtnlGroup = {
  link: 0x1,
  neigh: 0x4,
  ipv4Route: 0x40,
  ipv6Route: 0x400,
} as const;

/** One change the kernel announced: a link, neighbor (or FDB entry) or route added or removed. */
export type RtnlEvent =
  | { kind: 'link'; action: 'new' | 'del'; link: Link }
  | {
      kind: 'neighbor';
      action: 'new' | 'del';
      /** AF_BRIDGE (7) for an FDB entry, AF_INET/AF_INET6 for a neighbor. */
      family: number;
      neighbor: Neighbor;
    }
  | { kind: 'route'; action: 'new' | 'del'; route: Route };

/** Options of {@link RtnlMonitor.open}. */
export interface RtnlMonitorOptions {
  /** A bit mask of RtnlGroup values (default links, neighbors and IPv4 routes). */
  groups?: number;
  /** Listen in this namespace (a name under /run/netns, or a path). */
  netns?: string;
}

/**
 * The kernel's change notifications (`ip monitor link neigh route`): RTM_NEWLINK/DELLINK,
 * NEWNEIGH/DELNEIGH, NEWROUTE/DELROUTE as parsed events. The kernel drops notifications when a
 * listener falls behind; `onError` then hears ERR_TUN_IO with code ENOBUFS in its message, and
 * the listener must dump what it cares about again.
 */
export class RtnlMonitor {
  private readonly socket: NetlinkSocket;

  private constructor(socket: NetlinkSocket) {
    this.socket = socket;
  }

  /**
   * Joins the multicast groups and calls `onEvent` with each change, `onError` on a socket error.
   */
  static open(
    onEvent: (event: RtnlEvent) => void,
    onError: (err: WeftError) => void,
    options: RtnlMonitorOptions = {},
  ): RtnlMonitor {
    const socket = NetlinkSocket.open({
      netns: options.netns,
      groups: options.groups ?? RtnlGroup.link | RtnlGroup.neigh | RtnlGroup.ipv4Route,
    });
    const monitor = new RtnlMonitor(socket);
    socket.onMessage((datagram) => {
      let messages: Message[];
      try {
        messages = parseMessages(datagram);
      } catch (err) {
        onError(
          new WeftError(
            'ERR_NETLINK_PARSE',
            `a netlink notification could not be parsed: ${(err as Error).message}`,
            { cause: err },
          ),
        );
        return;
      }
      for (const msg of messages) {
        const event = toEvent(msg);
        if (event) onEvent(event);
      }
    }, onError);
    return monitor;
  }

  /** Lets the process exit while only this monitor is open. */
  unref(): void {
    this.socket.unref();
  }

  /** Leaves the groups and closes the socket; no callback runs after. */
  close(): void {
    this.socket.close();
  }
}

function toEvent(msg: Message): RtnlEvent | undefined {
  try {
    switch (msg.type) {
      case RtmType.newLink:
      case RtmType.delLink:
        return {
          kind: 'link',
          action: msg.type === RtmType.newLink ? 'new' : 'del',
          link: parseLink(msg),
        };
      case RtmType.newNeigh:
      case RtmType.delNeigh: {
        const { fam, n } = parseNeighborMessage(msg);
        if (
          fam !== AddressFamily.inet &&
          fam !== AddressFamily.inet6 &&
          fam !== AddressFamily.bridge
        )
          return undefined;
        return {
          kind: 'neighbor',
          action: msg.type === RtmType.newNeigh ? 'new' : 'del',
          family: fam,
          neighbor: n,
        };
      }
      case RtmType.newRoute:
      case RtmType.delRoute:
        return {
          kind: 'route',
          action: msg.type === RtmType.newRoute ? 'new' : 'del',
          route: parseRouteMessage(msg),
        };
      default:
        return undefined;
    }
  } catch {
    // A message too short for its header: not one we can act on.
    return undefined;
  }
}
