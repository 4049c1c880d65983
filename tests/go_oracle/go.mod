module toolgate.test/oracle

go 1.22
