"""Where models run: device specs (`spec`), measurement here (`latency`), over SSH (`ssh`) and adb
(`adb`), the latency cost model (`graph`, `costmodel`), energy (`power`), MCU fit (`mcu`) and the
HTML report (`report`). Importing this package loads nothing heavy; submodules import on use."""
