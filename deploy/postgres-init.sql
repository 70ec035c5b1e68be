-- One database for the simulated ERP's legacy tables, one for the gateway's own data.
CREATE DATABASE erp;
CREATE DATABASE gateway;
