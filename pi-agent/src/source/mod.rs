//! Where telegrams come from: the serial port, a capture file, or the simulator.
